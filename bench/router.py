"""The InferenceGraph router (issue 3): its cost in front of the transformer and alone.

One run starts, on 127.0.0.1 with one process each: the CPU upstream (``cpu_llm``), the Nexus
transformer in front of it, the router with the shipped ``chat-fallback`` graph in front of
the transformer (``--host-map`` sends the graph's hosts there), the router with a one-step
Sequence in front of the upstream, and, for throughput, a canned-answer upstream with the
router and the floors (minimal ASGI pass-throughs with an aiohttp or a lean client) in
front of it. ``harness.Run`` times streams direct, through the transformer and through
router + transformer, then drives every target with wrk at 1 and N connections in rounds.

    python -m bench router [--write-readme] [--duration 4] [--rounds 3]
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from bench import harness, report, servers
from bench.harness import CHAT_BODY, MODEL, OPENAI_PATH, Target
from bench.processes import Children
from bench.report import Summary, Verdict, fmt_ratio, ms, ratio, us

START = "<!-- bench:router:start -->"
END = "<!-- bench:router:end -->"
AFTER = "<!-- bench:transformer:end -->"
# What the fallback e2e test propagates: the key the transformer checks, and tracing ids.
PROPAGATE = r"^Authorization$,^X-Api-Key$,^X-Request-Id$,^Traceparent$"
CANNED = "canned upstream"


def one_step_graph(path: Path, url: str) -> Path:
    """The smallest graph: a Sequence with one service step (the router's own cost)."""
    resource = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": "bench-one-step"},
        "spec": {"nodes": {"root": {"routerType": "Sequence",
                                    "steps": [{"name": "chat", "serviceUrl": url}]}}},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(resource, sort_keys=False))
    return path


def start_all(children: Children, api_key: str, workdir: Path) -> harness.Started:
    """Every server of the run, the targets in table order, the streaming trio, the upstream."""
    upstream = servers.start_upstream(children, model=MODEL)
    redis = servers.start_redis(children)
    nexus = servers.start_nexus(
        children, upstream=upstream, redis=redis, model=MODEL, api_key=api_key
    )
    fast = servers.start_fast_upstream(children)
    fast_url = fast.base_url + OPENAI_PATH
    graph, hosts = servers.CHAT_FALLBACK, servers.graph_hosts(servers.CHAT_FALLBACK)

    def router(name: str, graph_file: Path, host_map: dict[str, servers.Server]) -> Any:
        return servers.start_router(children, name=name, graph_file=graph_file,
                                    host_map=host_map, propagate=PROPAGATE)  # fmt: skip

    graph_nexus = router("router-nexus", graph, dict.fromkeys(hosts, nexus))
    one_step = one_step_graph(workdir / "one-step.yaml", upstream.base_url + OPENAI_PATH)
    router_up = router("router-upstream", one_step, {})
    router_fast = router(
        "router-fast", one_step_graph(workdir / "one-step-fast.yaml", fast_url), {}
    )
    graph_fast = router("router-graph-fast", graph, dict.fromkeys(hosts, fast))
    body, chat = CHAT_BODY, OPENAI_PATH
    targets = [
        Target("direct", "upstream (`cpu_llm`)", "direct",
               upstream.base_url + chat, body, None, upstream),
        Target("nexus", "transformer → upstream", "direct",
               nexus.base_url + chat, body, "direct", nexus),
        Target("router-nexus", "router → transformer → upstream", "transformer → upstream",
               graph_nexus.base_url + chat, body, "nexus", graph_nexus),
        Target("router-upstream", "router → upstream", "direct",
               router_up.base_url + chat, body, "direct", router_up),
        Target("fast", "canned upstream", "direct", fast_url, body, None, fast),
        *(dataclasses.replace(t, label=f"{t.label} → canned upstream")
          for t in harness.floor_targets(children, fast=fast, redis=None, route=CANNED)),
        Target("router-fast", "router → canned upstream", CANNED,
               router_fast.base_url + chat, body, "fast", router_fast),
        Target("router-graph-fast", "router (chat-fallback graph) → canned upstream",
               CANNED, graph_fast.base_url + chat, body, "fast", graph_fast),
    ]  # fmt: skip
    streaming: list[tuple[Any, ...]] = [
        ("upstream direct", upstream),
        ("transformer → upstream", nexus),
        ("router → transformer → upstream", graph_nexus),
    ]
    return targets, streaming, upstream


def verdicts(s: dict[str, Summary], stream: list[dict[str, Any]]) -> list[Verdict]:
    """Issue 11's targets for the router, against the lean floor of the same run."""
    found = report.floor_verdicts(
        s["router-fast"],
        s["floor-lean"],
        name="the router",
        floor_name="lean floor",
        rps_share=report.TARGET_ROUTER_RPS_SHARE,
    )
    chain = "router → transformer → upstream"
    found.append(report.ttfb_verdict("router and transformer", stream, chain, "upstream direct"))
    firsts = {row["label"]: row["first_chunk_ms"] for row in stream}
    share = firsts[chain] - firsts["transformer → upstream"]
    text, met = found[-1]
    found[-1] = (text.removesuffix(")") + f", of which the router {share:+.2f} ms)", met)
    return found


def markdown(results: dict[str, Any], s: dict[str, Summary]) -> str:
    """The README section: side-by-side table, streaming, targets and how it was measured."""
    p, m = results["params"], results["machine"]
    lines = [
        f"| path | added against | p50 @1 conn | added p50 | p99 @1 conn "
        f"| req/s @{p['connections'][1]} conn | p99 @{p['connections'][1]} conn "
        "| CPU per request |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for x in s.values():
        lines.append(
            f"| {x.label} | {x.route} | {ms(x.p50_ms)} | {ms(x.added_p50_ms)} "
            f"| {ms(x.p99_ms)} | {x.rps:,.0f} | {ms(x.p99_32_ms)} | {us(x.cpu_us_per_request)} |"
        )
    failed = [x.label for x in s.values() if x.errors]
    if failed:
        lines += ["", f"**Some requests failed** (non-2xx or socket errors): {', '.join(failed)}."]
    stream = results["streaming"]
    lines += report.stream_lines(stream)
    fast, floors = s["router-fast"], ("floor-aiohttp", "floor-lean")
    lines += [
        "",
        "Ratios on the canned upstream: the router's throughput ÷ the aiohttp floor's "
        + " and ÷ the lean floor's ".join(fmt_ratio(ratio(fast.rps, s[f].rps)) for f in floors)
        + "; its CPU per request ÷ theirs "
        + " and ".join(
            fmt_ratio(ratio(fast.cpu_us_per_request, s[f].cpu_us_per_request)) for f in floors
        )
        + ".",
        "",
        "Targets of issue 11 (against the lean floor measured in the same run):",
        *report.verdict_lines(verdicts(s, stream["rows"])),
    ]
    lines += [
        "",
        f"Measured {results['date']} on {m['nproc']} CPUs ({m['cpu_model']}) by "
        f"`python -m bench router`: {p['wrk']}, {p['threads']} thread, 1 and {p['connections'][1]} "
        f"connections, {p['duration_s']:g} s per cell after a {p['warmup_s']:g} s warm-up, "
        f"medians of {p['rounds']} rounds; every server one process on 127.0.0.1; routers "
        f"propagate `{PROPAGATE}`; 1-minute load average {m['load_before']:g} before, "
        f"{m['load_after']:g} after (with the benchmark's own). CPU per request is the "
        "measured process's own (user + system) during the many-connection cell: for a "
        "router row it is the router alone, whatever sits behind it. The canned upstream "
        "(`bench/fast_upstream.py`) answers a fixed completion so that the proxy in front of "
        "it, not the model server, is what saturates; the floors (`bench/passthrough.py`) "
        "are uvicorn + httptools + uvloop pass-throughs in front of it, whose upstream hop "
        "is an aiohttp session or lean raw keep-alive connections parsed by httptools.",
    ]
    lines += report.busy_lines(m["load_before"])
    return "\n".join(lines)


def main(argv: list[str], *, prog: str) -> int:
    parser = harness.wrk_parser(prog, __doc__)
    args = harness.parse_wrk_args(parser, argv)
    run = harness.Run.begin("router")
    results, summaries = run.measure(args, start_all)
    run.finish(results, markdown(results, summaries), markers=(START, END),
               write_readme=args.write_readme, after=AFTER)  # fmt: skip
    return 0
