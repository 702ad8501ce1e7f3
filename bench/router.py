"""Benchmark the InferenceGraph router (issue 3): its cost in front of the transformer and alone.

One run starts, on 127.0.0.1 with one process each: the CPU upstream (``cpu_llm``), the Nexus
transformer in front of it, the router with the shipped ``chat-fallback`` graph in front of
the transformer (``--host-map`` sends both cluster hosts there), the router with a one-step
Sequence in front of the upstream, and, for throughput, a canned-answer upstream with the
router and the floors (minimal ASGI pass-throughs with an aiohttp or a lean client) in
front of it. Every target is driven
by wrk at 1 and N connections in rounds (``run.measure``), then streaming time to first
chunk is measured direct, through the transformer and through router + transformer.

    python bench/router.py [--write-readme] [--duration 4] [--rounds 3]
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import yaml

import report
import run
import servers
from load import wrk_version
from processes import REPO, Children, terminate_on_sigterm

START = "<!-- bench:router:start -->"
END = "<!-- bench:router:end -->"
AFTER = "<!-- bench:transformer:end -->"
GRAPH = REPO / "graphs" / "inferencegraph.chat-fallback.yaml"
GRAPH_HOSTS = ("llama-8b.nexus.svc.cluster.local", "qwen-1-5b.nexus.svc.cluster.local")
# What the fallback e2e test propagates: the key the transformer checks, and tracing ids.
PROPAGATE = r"^Authorization$,^X-Api-Key$,^X-Request-Id$,^Traceparent$"


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


def start_all(children: Children, *, api_key: str, workdir: Path) -> tuple[list[run.Target], Any]:
    """Every server of the run and the targets, in table order; also the streaming trio."""
    upstream = servers.start_upstream(children, model=run.MODEL)
    redis = servers.start_redis(children)
    nexus = servers.start_nexus(
        children, upstream=upstream, redis=redis, model=run.MODEL, api_key=api_key
    )
    fast = servers.start_fast_upstream(children)
    fast_url = fast.base_url + run.OPENAI_PATH
    graph_nexus = servers.start_router(children, name="router-nexus", graph_file=GRAPH,
                                       host_map=dict.fromkeys(GRAPH_HOSTS, nexus),
                                       propagate=PROPAGATE)  # fmt: skip
    one_step = one_step_graph(workdir / "one-step.yaml", upstream.base_url + run.OPENAI_PATH)
    router_up = servers.start_router(children, name="router-upstream", graph_file=one_step,
                                     host_map={}, propagate=PROPAGATE)  # fmt: skip
    one_fast = one_step_graph(workdir / "one-step-fast.yaml", fast_url)
    router_fast = servers.start_router(children, name="router-fast", graph_file=one_fast,
                                       host_map={}, propagate=PROPAGATE)  # fmt: skip
    graph_fast = servers.start_router(children, name="router-graph-fast", graph_file=GRAPH,
                                      host_map=dict.fromkeys(GRAPH_HOSTS, fast),
                                      propagate=PROPAGATE)  # fmt: skip
    body, chat = run.CHAT_BODY, run.OPENAI_PATH
    targets = [
        run.Target("direct", "upstream (`cpu_llm`)", "direct",
                   upstream.base_url + chat, body, None, upstream),
        run.Target("nexus", "transformer → upstream", "direct",
                   nexus.base_url + chat, body, "direct", nexus),
        run.Target("router-nexus", "router → transformer → upstream", "transformer → upstream",
                   graph_nexus.base_url + chat, body, "nexus", graph_nexus),
        run.Target("router-upstream", "router → upstream", "direct",
                   router_up.base_url + chat, body, "direct", router_up),
        run.Target("fast", "canned upstream", "direct",
                   fast_url, body, None, fast),
        *(dataclasses.replace(t, label=f"{t.label} → canned upstream", route="canned upstream")
          for t in run.floor_targets(children, fast=fast, redis=None)),
        run.Target("router-fast", "router → canned upstream", "canned upstream",
                   router_fast.base_url + chat, body, "fast", router_fast),
        run.Target("router-graph-fast", "router (chat-fallback graph) → canned upstream",
                   "canned upstream", graph_fast.base_url + chat, body, "fast", graph_fast),
    ]  # fmt: skip
    streaming = (("upstream direct", upstream), ("transformer → upstream", nexus),
                 ("router → transformer → upstream", graph_nexus))  # fmt: skip
    return targets, (upstream, streaming)


def verdicts(s: dict[str, report.Summary], stream: list[dict[str, Any]]) -> list[report.Verdict]:
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


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def markdown(results: dict[str, Any], s: dict[str, report.Summary]) -> str:
    """The README section: side-by-side table, streaming, targets and how it was measured."""
    p, m = results["params"], results["machine"]
    lines = [
        f"| path | added against | p50 @1 conn | added p50 | p99 @1 conn "
        f"| req/s @{p['connections'][1]} conn | p99 @{p['connections'][1]} conn "
        "| CPU per request |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for x in s.values():
        cpu = "—" if x.cpu_us_per_request is None else f"{x.cpu_us_per_request:,.0f} µs"
        lines.append(
            f"| {x.label} | {x.route} | {_ms(x.p50_ms)} | {_ms(x.added_p50_ms)} "
            f"| {_ms(x.p99_ms)} | {x.rps:,.0f} | {_ms(x.p99_32_ms)} | {cpu} |"
        )
    failed = [x.label for x in s.values() if x.errors]
    if failed:
        lines += ["", f"**Some requests failed** (non-2xx or socket errors): {', '.join(failed)}."]
    stream = results["streaming"]
    lines += [
        "",
        f"Streaming ({stream['max_tokens']} tokens, upstream pausing "
        f"{stream['token_latency_ms']:g} ms between tokens, medians of "
        f"{stream['requests']} sequential requests):",
        "",
        "| path | first chunk | whole answer |",
        "|---|--:|--:|",
    ]
    lines += [f"| {r['label']} | {_ms(r['first_chunk_ms'])} | {_ms(r['total_ms'])} |"
              for r in stream["rows"]]  # fmt: skip
    fast, floors = s["router-fast"], ("floor-aiohttp", "floor-lean")
    lines += [
        "",
        "Ratios on the canned upstream: the router's throughput ÷ the aiohttp floor's "
        + " and ÷ the lean floor's ".join(
            report.fmt_ratio(report.ratio(fast.rps, s[f].rps)) for f in floors
        )
        + "; its CPU per request ÷ theirs "
        + " and ".join(
            report.fmt_ratio(report.ratio(fast.cpu_us_per_request, s[f].cpu_us_per_request))
            for f in floors
        )
        + ".",
        "",
        "Targets of issue 11 (against the lean floor measured in the same run):",
        *report.verdict_lines(verdicts(s, stream["rows"])),
    ]
    lines += [
        "",
        f"Measured {results['date']} on {m['nproc']} CPUs ({m['cpu_model']}) by "
        f"`bench/router.py`: {p['wrk']}, {p['threads']} thread, 1 and {p['connections'][1]} "
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
    if m["load_before"] > report.BUSY_LOAD:
        lines += [
            "",
            f"**The machine was busy when this ran (load average {m['load_before']:g} before "
            "the benchmark started): other work competed for the cores, so latency and "
            "throughput understate every path; CPU per request is the steadier figure.**",
        ]
    return "\n".join(lines)


def ensure_markers(readme: Path) -> None:
    """Add the router section's marker lines right after the transformer's, once."""
    text = readme.read_text()
    if START in text:
        return
    at = text.find(AFTER)
    if at < 0:
        raise SystemExit(f"{readme} has no {AFTER} line to put the router section after")
    at += len(AFTER)
    readme.write_text(text[:at] + f"\n\n{START}\n{END}" + text[at:])


def main(argv: list[str] | None = None) -> int:
    args = run.parse_args(sys.argv[1:] if argv is None else argv)
    terminate_on_sigterm()
    host = run.machine()
    if host["load_before"] > report.BUSY_LOAD:
        print(f"warning: load average is {host['load_before']} before the run; "
              "latency and throughput will understate every target", flush=True)  # fmt: skip
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = REPO / "bench" / "results" / f"router-{stamp}"
    workdir.mkdir(parents=True)
    api_key = "sk-bench-" + secrets.token_hex(16)
    print(f"logs and raw results in {workdir.relative_to(REPO)}", flush=True)
    with Children(workdir) as children:
        targets, (upstream, streaming) = start_all(children, api_key=api_key, workdir=workdir)
        for target in targets:
            run.smoke_test(target, api_key)
        started = time.monotonic()
        # Streams first, as in run.py: on limiter windows that hold no earlier load.
        run.set_token_latency(upstream, run.STREAM_TOKEN_LATENCY_MS)
        stream_rows = run.measure_streams(streaming, api_key=api_key, requests=args.stream_requests)
        run.set_token_latency(upstream, 0.0)
        rounds = run.measure(targets, args=args, api_key=api_key, workdir=workdir)
        print(f"measured in {time.monotonic() - started:.0f} s; stopping servers", flush=True)

    summaries = report.summarize(
        rounds,
        labels={t.key: (t.label, t.route) for t in targets},
        baselines={t.key: t.baseline for t in targets},
    )
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": {**host, "load_after": round(os.getloadavg()[0], 2)},
        "params": {
            "wrk": wrk_version().split(" [")[0],
            "threads": args.threads,
            "connections": [1, args.connections],
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
        },
        "targets": {
            t.key: {
                "label": t.label,
                "baseline": t.baseline,
                "rounds": [[dataclasses.asdict(c) for c in pair] for pair in rounds[t.key]],
                "summary": dataclasses.asdict(summaries[t.key]),
            }
            for t in targets
        },
        "streaming": {
            "token_latency_ms": run.STREAM_TOKEN_LATENCY_MS,
            "max_tokens": run.STREAM_MAX_TOKENS,
            "requests": args.stream_requests,
            "rows": stream_rows,
        },
    }
    section = markdown(results, summaries)
    results["markdown"] = section
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + section)
    if args.write_readme:
        ensure_markers(REPO / "README.md")
        report.write_readme(REPO / "README.md", section, start=START, end=END)
        print("\nREADME.md updated")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("\ninterrupted: every server started was stopped", file=sys.stderr)
        raise SystemExit(130) from None
