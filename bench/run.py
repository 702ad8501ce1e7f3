"""Benchmark the Nexus transformer against the upstream, its peers and the floors of its hop.

One run starts every server on 127.0.0.1 (free ports, one worker each): the upstream, the
transformer, LiteLLM, Portkey's gateway and a plain KServe transformer in front of it;
then a canned upstream with a second transformer and the aiohttp and lean floors
(``passthrough.py``) in front of that. It drives each with wrk at 1 connection (added
latency) and 32 connections (throughput, tail and CPU per request), in rounds so slow
drift of the machine touches every target alike, then measures streaming time to first
chunk. Raw results go to ``bench/results/``; ``--write-readme`` puts the table and issue
11's verdicts into README.md between the bench markers.

    python bench/run.py [--with-litellm] [--with-portkey] [--write-readme] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import load
import report
import servers
import ttfb
from processes import REPO, Children, group_cpu_seconds, terminate_on_sigterm

MODEL = "chat"
CHAT_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
).encode()
V1_BODY = json.dumps({"instances": ["Hello"]}).encode()
OPENAI_PATH = "/v1/chat/completions"
V1_PATH = f"/v1/models/{MODEL}:predict"
STREAM_TOKEN_LATENCY_MS = 20.0
CANNED = "OpenAI chat, canned upstream"
REDIS_CLIENTS = {"aiohttp": "redis-py", "lean": "hiredis"}
STREAM_MAX_TOKENS = 32


@dataclass(frozen=True, slots=True)
class Target:
    """One row of the table: a server, the route it is called on, and its direct baseline."""

    key: str
    label: str
    route: str
    url: str
    body: bytes
    baseline: str | None
    server: servers.Server
    headers: Mapping[str, str] = field(default_factory=dict)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each target")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all targets")
    parser.add_argument("--connections", type=int, default=32, help="the throughput cell")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (cores are few)")
    parser.add_argument("--stream-requests", type=int, default=20)
    litellm = parser.add_mutually_exclusive_group()
    litellm.add_argument("--with-litellm", action="store_true", help="install it if missing")
    litellm.add_argument("--without-litellm", action="store_true", help="skip it even if there")
    portkey = parser.add_mutually_exclusive_group()
    portkey.add_argument("--with-portkey", action="store_true", help="npm-install it if missing")
    portkey.add_argument("--without-portkey", action="store_true", help="skip it even if there")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1 or args.connections < 1:
        parser.error("--duration, --rounds and --connections must be positive")
    return args


def smoke_test(target: Target, api_key: str) -> None:
    """One request must succeed before a target is measured: wrk would count 401s as speed."""
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by this script
        target.url,
        data=target.body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}",
                 **target.headers},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
            answer = json.loads(reply.read())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{target.label} on {target.route} does not answer: {exc}") from exc
    if not (answer.get("choices") or answer.get("predictions")):
        raise RuntimeError(f"{target.label} on {target.route} answered no completion: {answer}")


def measure(
    targets: list[Target], *, args: argparse.Namespace, api_key: str, workdir: Path
) -> dict[str, list[tuple[load.Cell, load.Cell]]]:
    """Every round visits every target: warm-up, then 1 connection, then N connections."""
    rounds: dict[str, list[tuple[load.Cell, load.Cell]]] = {t.key: [] for t in targets}
    for n in range(1, args.rounds + 1):
        for t in targets:
            script = load.write_script(
                workdir / f"{t.key}.lua", body=t.body, api_key=api_key, headers=t.headers
            )
            common = {"script": script, "threads": args.threads}
            load.run(t.url, connections=args.connections, seconds=args.warmup, **common)
            one = load.run(t.url, connections=1, seconds=args.duration, **common)
            cpu_before = group_cpu_seconds(t.server.child.proc.pid)
            many = load.run(t.url, connections=args.connections, seconds=args.duration, **common)
            cpu = group_cpu_seconds(t.server.child.proc.pid) - cpu_before
            many = dataclasses.replace(many, cpu_seconds=cpu)
            rounds[t.key].append((one, many))
            print(
                f"round {n}/{args.rounds} {t.label:<28} {t.route:<18} "
                f"p50 {_num(one.p50_ms, 6, 3)} ms  p99 {_num(one.p99_ms, 6, 3)} ms  | "
                f"{many.rps:8.0f} req/s  p99 {_num(many.p99_ms, 7, 2)} ms  "
                f"CPU {many.cpu_us_per_request or 0:6.0f} µs/req"
                + (f"  ERRORS {one.errors + many.errors}" if one.errors + many.errors else ""),
                flush=True,
            )
    return rounds


def _num(value: float | None, width: int, places: int) -> str:
    return "n/a".rjust(width) if value is None else f"{value:{width}.{places}f}"


def set_token_latency(upstream: servers.Server, ms: float) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by this script
        f"{upstream.base_url}/admin/faults", data=json.dumps({"token_latency_ms": ms}).encode()
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        reply.read()


def machine() -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "load_before": round(os.getloadavg()[0], 2),
    }


def measure_streams(
    servers: Iterable[tuple[str, Any]], *, api_key: str, requests: int
) -> list[dict[str, Any]]:
    """Time to first chunk and whole answer of each server (``None`` servers are skipped).

    Each entry is ``(label, server)`` or ``(label, server, headers)``.
    """
    rows: list[dict[str, Any]] = []
    for label, server, *extra in servers:
        if server is None:
            continue
        try:
            timing = ttfb.measure(
                server.base_url + OPENAI_PATH,
                model=MODEL,
                max_tokens=STREAM_MAX_TOKENS,
                api_key=api_key,
                requests=requests,
                headers=extra[0] if extra else None,
            )
        except RuntimeError as exc:  # a peer that cannot stream gets a row saying so
            print(f"streaming {label:<32} FAILED: {exc}", flush=True)
            rows.append({"label": label, "first_chunk_ms": None, "total_ms": None,
                         "error": str(exc)[:200]})  # fmt: skip
            continue
        rows.append({"label": label, **dataclasses.asdict(timing)})
        print(f"streaming {label:<32} first chunk {timing.first_chunk_ms:7.2f} ms  "
              f"whole answer {timing.total_ms:7.1f} ms", flush=True)  # fmt: skip
    return rows


def floor_targets(
    children: Children, *, fast: servers.Server, redis: servers.Server | None
) -> list[Target]:
    """The floors in front of the canned upstream: aiohttp and lean, with ``redis`` also
    each with one EVALSHA per request (``passthrough.py``)."""
    url = fast.base_url + OPENAI_PATH
    kinds = [("aiohttp", None), ("lean", None)]
    if redis is not None:
        kinds = [("aiohttp", None), ("aiohttp", redis), ("lean", None), ("lean", redis)]
    targets = []
    for client, store in kinds:
        key = f"floor-{client}" + ("-redis" if store else "")
        label = f"{client} floor" + (f" + {REDIS_CLIENTS[client]} EVALSHA" if store else "")
        floor = servers.start_passthrough(
            children, name=key, upstream_url=url, client=client, redis=store
        )
        targets.append(
            Target(key, label, CANNED, floor.base_url + OPENAI_PATH, CHAT_BODY, "fast", floor)
        )
    return targets


def start_all(
    children: Children, *, api_key: str, workdir: Path, litellm: bool, portkey: bool
) -> tuple[list[Target], list[tuple[Any, ...]], servers.Server]:
    """Every server of the run, the targets in table order, the streaming rows, the upstream."""
    upstream = servers.start_upstream(children, model=MODEL)
    redis = servers.start_redis(children)
    nexus = servers.start_nexus(
        children, upstream=upstream, redis=redis, model=MODEL, api_key=api_key
    )
    kserve = servers.start_kserve_passthrough(children, upstream=upstream, model=MODEL)
    fast = servers.start_fast_upstream(children)
    nexus_fast = servers.start_nexus(
        children, upstream=fast, redis=redis, model=MODEL, api_key=api_key, name="nexus-canned"
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
    targets += floor_targets(children, fast=fast, redis=redis)
    return targets, streaming, upstream


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    terminate_on_sigterm()
    wrk_version = load.wrk_version()
    host = machine()
    if host["load_before"] > report.BUSY_LOAD:
        # Other work on the machine competes with the servers: figures come out low and noisy.
        print(f"warning: load average is {host['load_before']} before the run; "
              "figures measured on a busy machine understate every target", flush=True)  # fmt: skip
    with_litellm = not args.without_litellm and servers.ensure_litellm(install=args.with_litellm)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = REPO / "bench" / "results" / stamp
    workdir.mkdir(parents=True)
    # LiteLLM's master key must start with "sk-"; the same secret is Nexus's API key.
    api_key = "sk-bench-" + secrets.token_hex(16)
    versions = {"kserve": metadata.version("kserve")}
    if with_litellm:
        versions["litellm"] = servers.litellm_version()
    with_portkey = not args.without_portkey and servers.ensure_portkey(install=args.with_portkey)
    if with_portkey:
        versions["@portkey-ai/gateway"] = servers.PORTKEY_PACKAGE.rsplit("@", 1)[1]
    print(f"logs and raw results in {workdir.relative_to(REPO)}", flush=True)

    with Children(workdir) as children:
        targets, streaming, upstream = start_all(
            children, api_key=api_key, workdir=workdir, litellm=with_litellm, portkey=with_portkey
        )
        for target in targets:
            smoke_test(target, api_key)
        started = time.monotonic()
        # Streams first, while the limiter's windows hold no load: in the minute after a
        # burst, each request also pays for expiring the burst's window entries (README,
        # "Where the transformer's time goes"), which is not what this row measures.
        set_token_latency(upstream, STREAM_TOKEN_LATENCY_MS)
        stream_rows = measure_streams(streaming, api_key=api_key, requests=args.stream_requests)
        set_token_latency(upstream, 0.0)
        rounds = measure(targets, args=args, api_key=api_key, workdir=workdir)
        print(f"measured in {time.monotonic() - started:.0f} s; stopping servers", flush=True)

    summaries = report.summarize(
        rounds,
        labels={t.key: (t.label, t.route) for t in targets},
        baselines={t.key: t.baseline for t in targets},
    )
    results: dict[str, Any] = {
        "date": dt.date.today().isoformat(),
        "machine": {**host, "load_after": round(os.getloadavg()[0], 2)},
        "versions": versions,
        "params": {
            "wrk": wrk_version.split(" [")[0],
            "threads": args.threads,
            "connections": [1, args.connections],
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
        },
        "targets": {
            t.key: {
                "label": t.label,
                "route": t.route,
                "baseline": t.baseline,
                "rounds": [[dataclasses.asdict(c) for c in pair] for pair in rounds[t.key]],
                "summary": dataclasses.asdict(summaries[t.key]),
            }
            for t in targets
        },
        "ratios": report.ratios(summaries),
        "streaming": {
            "token_latency_ms": STREAM_TOKEN_LATENCY_MS,
            "max_tokens": STREAM_MAX_TOKENS,
            "requests": args.stream_requests,
            "rows": stream_rows,
        },
    }
    section = report.markdown(results, summaries)
    results["markdown"] = section
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + section)
    if args.write_readme:
        report.write_readme(REPO / "README.md", section)
        print("\nREADME.md updated")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        # The servers were stopped on the way out of main(); no traceback for a Ctrl-C.
        print("\ninterrupted: every server started was stopped", file=sys.stderr)
        raise SystemExit(130) from None
