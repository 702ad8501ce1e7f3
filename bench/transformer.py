"""The transformer against the upstream, its peers and the floors of its hop (README table).

One run starts every server on 127.0.0.1 (free ports, one worker each): the upstream, the
transformer, LiteLLM, Portkey's gateway and a plain KServe transformer in front of it;
then a canned upstream with a second transformer and the aiohttp and lean floors
(``passthrough.py``) in front of that. ``harness.Run`` drives each with wrk at 1 connection
(added latency) and 32 connections (throughput, tail and CPU per request), in rounds,
after timing streams. Raw results go to ``bench/results/``; ``--write-readme`` puts the
table and issue 11's verdicts into README.md between the ``bench:transformer`` markers.

    python -m bench transformer [--with-litellm] [--with-portkey] [--write-readme] [--rounds 3]
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import harness, report, servers
from bench.harness import CHAT_BODY, MODEL, OPENAI_PATH, Target
from bench.processes import Children
from bench.report import Summary, Verdict, fmt_ratio, ms, ratio, times, us

START, END = "<!-- bench:transformer:start -->", "<!-- bench:transformer:end -->"
V1_BODY = json.dumps({"instances": ["Hello"]}).encode()
V1_PATH = f"/v1/models/{MODEL}:predict"
CANNED = "OpenAI chat, canned upstream"


def start_all(
    children: Children, api_key: str, workdir: Path, *, litellm: bool, portkey: bool
) -> harness.Started:
    """Every server of the run, the targets in table order, the streaming rows, the upstream."""
    upstream = servers.start_upstream(children, model=MODEL)
    redis = servers.start_redis(children)
    nexus = servers.start_nexus(
        children, upstream=upstream, redis=redis, model=MODEL, api_key=api_key
    )
    kserve = servers.start_kserve_passthrough(children, upstream=upstream, model=MODEL)
    fast = servers.start_fast_upstream(children)
    nexus_fast = servers.start_nexus(
        children,
        upstream=fast,
        redis=redis,
        model=MODEL,
        api_key=api_key,
        name="nexus-canned",
    )
    chat = OPENAI_PATH
    targets = [
        Target("direct-openai", "direct upstream", "OpenAI chat",
               upstream.base_url + chat, CHAT_BODY, None, upstream),
        Target("nexus-openai", "Nexus transformer", "OpenAI chat",
               nexus.base_url + chat, CHAT_BODY, "direct-openai", nexus),
    ]  # fmt: skip
    streaming: list[tuple[Any, ...]] = [("direct upstream", upstream), ("Nexus transformer", nexus)]
    if litellm:
        proxy = servers.start_litellm(
            children, upstream=upstream, model=MODEL, api_key=api_key, config_dir=workdir
        )
        targets.append(Target("litellm-openai", "LiteLLM proxy", "OpenAI chat",
                              proxy.base_url + chat, CHAT_BODY, "direct-openai",
                              proxy))  # fmt: skip
        streaming.append(("LiteLLM proxy", proxy))
    if portkey:
        gateway, routing = servers.start_portkey(children), servers.portkey_headers(upstream)
        targets.append(Target("portkey-openai", "Portkey gateway", "OpenAI chat",
                              gateway.base_url + chat, CHAT_BODY, "direct-openai", gateway,
                              routing))  # fmt: skip
        streaming.append(("Portkey gateway", gateway, routing))
    targets += [
        Target("direct-v1", "direct upstream", "KServe v1 predict",
               upstream.base_url + V1_PATH, V1_BODY, None, upstream),
        Target("nexus-v1", "Nexus transformer", "KServe v1 predict",
               nexus.base_url + V1_PATH, V1_BODY, "direct-v1", nexus),
        Target("kserve-v1", "`kserve.Model` pass-through", "KServe v1 predict",
               kserve.base_url + V1_PATH, V1_BODY, "direct-v1", kserve),
        Target("fast", "canned upstream", CANNED, fast.base_url + chat, CHAT_BODY, None, fast),
        Target("nexus-fast", "Nexus transformer", CANNED,
               nexus_fast.base_url + chat, CHAT_BODY, "fast", nexus_fast),
    ]  # fmt: skip
    targets += harness.floor_targets(children, fast=fast, redis=redis, route=CANNED)
    return targets, streaming, upstream


def ratios(s: dict[str, Summary]) -> dict[str, float | None]:
    nexus, nexus_v1, kserve, nexus_fast = (
        s.get(k) for k in ("nexus-openai", "nexus-v1", "kserve-v1", "nexus-fast")
    )
    out: dict[str, float | None] = {
        "nexus_v1_rps_over_kserve": ratio(_get(nexus_v1, "rps"), _get(kserve, "rps")),
        "kserve_added_p50_over_nexus_v1": ratio(
            _get(kserve, "added_p50_ms"), _get(nexus_v1, "added_p50_ms")
        ),
    }
    for peer in ("litellm", "portkey"):
        other = s.get(f"{peer}-openai")
        out[f"nexus_rps_over_{peer}"] = ratio(_get(nexus, "rps"), _get(other, "rps"))
        out[f"{peer}_added_p50_over_nexus"] = ratio(
            _get(other, "added_p50_ms"), _get(nexus, "added_p50_ms")
        )
        out[f"{peer}_cpu_over_nexus"] = ratio(
            _get(other, "cpu_us_per_request"), _get(nexus, "cpu_us_per_request")
        )
    for floor in ("floor-aiohttp-redis", "floor-lean-redis"):
        out[f"nexus_rps_over_{floor}"] = ratio(_get(nexus_fast, "rps"), _get(s.get(floor), "rps"))
        out[f"nexus_cpu_over_{floor}"] = ratio(
            _get(nexus_fast, "cpu_us_per_request"), _get(s.get(floor), "cpu_us_per_request")
        )
    return out


def _get(summary: Summary | None, attr: str) -> float | None:
    return None if summary is None else getattr(summary, attr)


def verdicts(s: dict[str, Summary], stream: list[dict[str, Any]]) -> list[Verdict]:
    """Issue 11's targets for the transformer's full governed path."""
    found: list[Verdict] = []
    if "nexus-fast" in s and "floor-lean-redis" in s:
        found += report.floor_verdicts(
            s["nexus-fast"],
            s["floor-lean-redis"],
            name="the transformer",
            floor_name="lean Redis floor",
            rps_share=report.TARGET_TRANSFORMER_RPS_SHARE,
        )
    found.append(
        report.ttfb_verdict("the transformer", stream, "Nexus transformer", "direct upstream")
    )
    return found


def markdown(results: dict[str, Any], s: dict[str, Summary]) -> str:
    """The README section: table, ratios, streaming, targets and how it was measured."""
    r = ratios(s)
    lines = [
        "| path | route | p50 @1 conn | p99 @1 conn | added p50 | added p99 "
        "| req/s @32 conn | p99 @32 conn | CPU per request |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for x in s.values():
        lines.append(
            f"| {x.label} | {x.route} | {ms(x.p50_ms)} | {ms(x.p99_ms)} "
            f"| {ms(x.added_p50_ms)} | {ms(x.added_p99_ms)} | {x.rps:,.0f} "
            f"| {ms(x.p99_32_ms)} | {us(x.cpu_us_per_request)} |"
        )
    failed = [x.label + " (" + x.route + ")" for x in s.values() if x.errors]
    if failed:
        lines += ["", f"**Some requests failed** (non-2xx or socket errors): {', '.join(failed)}."]
    lines += [
        "",
        f"Ratios: Nexus ÷ LiteLLM throughput {times(r['nexus_rps_over_litellm'])}, ÷ Portkey "
        f"{times(r['nexus_rps_over_portkey'])}; added p50 LiteLLM ÷ Nexus "
        f"{times(r['litellm_added_p50_over_nexus'])}, Portkey ÷ Nexus "
        f"{times(r['portkey_added_p50_over_nexus'])}; CPU per request LiteLLM ÷ Nexus "
        f"{times(r['litellm_cpu_over_nexus'])}, Portkey ÷ Nexus "
        f"{times(r['portkey_cpu_over_nexus'])}; Nexus ÷ `kserve.Model` throughput on the v1 "
        f"route {times(r['nexus_v1_rps_over_kserve'])}. On the canned upstream, the "
        "transformer's throughput ÷ the aiohttp Redis floor's "
        f"{fmt_ratio(r['nexus_rps_over_floor-aiohttp-redis'])}, ÷ the lean Redis floor's "
        f"{fmt_ratio(r['nexus_rps_over_floor-lean-redis'])}; its CPU per request ÷ theirs "
        f"{fmt_ratio(r['nexus_cpu_over_floor-aiohttp-redis'])} and "
        f"{fmt_ratio(r['nexus_cpu_over_floor-lean-redis'])}.",
    ]
    stream = results["streaming"]
    lines += report.stream_lines(stream)
    lines += ["", "Targets of issue 11 (against the lean floor measured in the same run):"]
    lines += report.verdict_lines(verdicts(s, stream["rows"]))
    lines += ["", how_measured(results)]
    lines += report.busy_lines(results["machine"]["load_before"])
    return "\n".join(lines)


def how_measured(results: dict[str, Any]) -> str:
    m, p = results["machine"], results["params"]
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    return (
        f"Measured {results['date']} on {m['nproc']} CPUs ({m['cpu_model']}) by "
        f"`python -m bench transformer` (`make bench`): {p['wrk']}, {p['threads']} thread, "
        f"1 and 32 connections, "
        f"{p['duration_s']:g} s per cell after a {p['warmup_s']:g} s warm-up, medians of "
        f"{p['rounds']} rounds; client, servers, upstream (`tests/support/cpu_llm.py`) and Redis "
        f"on 127.0.0.1, one worker process each; {versions}; 1-minute load average "
        f"{m['load_before']:g} before, {m['load_after']:g} after (with the benchmark's own). "
        "Added latency is against the upstream called directly on the same route; CPU per "
        "request is the measured server's own processes (user + system, from "
        "`/proc/<pid>/stat` before and after) during the 32-connection cell, so for a proxy "
        "it excludes the upstream and Redis. The canned upstream (`bench/fast_upstream.py`) "
        "answers a fixed completion so that what stands in front of it saturates first; the "
        "floors (`bench/passthrough.py`) are uvicorn + httptools + uvloop pass-throughs in "
        "front of it whose upstream hop is an aiohttp session or lean raw keep-alive "
        "connections parsed by httptools, each also with one EVALSHA per request (redis-py, "
        "or `nexus.limits.resp` over one pipelined connection read by hiredis)."
    )


def main(argv: list[str], *, prog: str) -> int:
    parser = harness.wrk_parser(prog, __doc__)
    litellm = parser.add_mutually_exclusive_group()
    litellm.add_argument("--with-litellm", action="store_true", help="install it if missing")
    litellm.add_argument("--without-litellm", action="store_true", help="skip it even if there")
    portkey = parser.add_mutually_exclusive_group()
    portkey.add_argument("--with-portkey", action="store_true", help="npm-install it if missing")
    portkey.add_argument("--without-portkey", action="store_true", help="skip it even if there")
    args = harness.parse_wrk_args(parser, argv)
    run = harness.Run.begin("transformer")
    with_litellm = not args.without_litellm and servers.ensure_litellm(install=args.with_litellm)
    versions = {"kserve": metadata.version("kserve")}
    if with_litellm:
        versions["litellm"] = servers.litellm_version()
    with_portkey = not args.without_portkey and servers.ensure_portkey(install=args.with_portkey)
    if with_portkey:
        versions["@portkey-ai/gateway"] = servers.PORTKEY_PACKAGE.rsplit("@", 1)[1]

    def start(children: Children, api_key: str, workdir: Path) -> harness.Started:
        return start_all(children, api_key, workdir, litellm=with_litellm, portkey=with_portkey)

    results, summaries = run.measure(args, start)
    results |= {"versions": versions, "ratios": ratios(summaries)}
    run.finish(results, markdown(results, summaries), markers=(START, END),
               write_readme=args.write_readme)  # fmt: skip
    return 0
