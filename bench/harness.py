"""What the benchmarks share: a run's directory and key, targets driven by wrk in rounds,
streams timed, the machine's state, raw results written and the README section replaced.

A wrk benchmark (``transformer``, ``router``) starts its servers, then ``Run.measure``
checks each target answers, times streams first (while the limiter's windows hold no
load: in the minute after a burst each request also pays for expiring the burst's window
entries), then drives every target at 1 connection (added latency) and N connections
(throughput, tail, CPU per request), in rounds so slow drift of the machine touches every
target alike. Each benchmark keeps only its servers and its table.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import load, report, servers, ttfb
from bench.processes import REPO, Children, group_cpu_seconds
from nexus.transformer.app import UPSTREAM_PATHS

README = REPO / "README.md"
MODEL = "chat"
OPENAI_PATH = UPSTREAM_PATHS["chat"]
CHAT_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
).encode()
STREAM_TOKEN_LATENCY_MS = 20.0
STREAM_MAX_TOKENS = 32
REDIS_CLIENTS = {"aiohttp": "redis-py", "lean": "hiredis"}


@dataclass(frozen=True, slots=True)
class Target:
    """One row of a table: a server, the route it is called on, and its direct baseline."""

    key: str
    label: str
    route: str
    url: str
    body: bytes
    baseline: str | None
    server: servers.Server
    headers: Mapping[str, str] = field(default_factory=dict)


# What a wrk benchmark's ``start`` returns: the targets in table order, the streaming rows
# ``(label, server[, headers])`` and the upstream whose token latency streams are timed at.
Started = tuple[list[Target], list[tuple[Any, ...]], servers.Server]
Start = Callable[[Children, str, Path], Started]


def wrk_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The options every wrk benchmark takes; ``parse_wrk_args`` reads them."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").splitlines()[0])
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each target")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all targets")
    parser.add_argument("--connections", type=int, default=32, help="the throughput cell")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (cores are few)")
    parser.add_argument("--stream-requests", type=int, default=20)
    parser.add_argument("--write-readme", action="store_true")
    return parser


def parse_wrk_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by a ``wrk_parser`` (and what a benchmark added), figures checked."""
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rounds < 1 or args.connections < 1:
        parser.error("--duration, --rounds and --connections must be positive")
    return args


def machine() -> dict[str, Any]:
    """The CPUs and Python measured on, and the 1-minute load average before the run."""
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


def smoke_test(target: Target, api_key: str) -> None:
    """One request must succeed before a target is measured: wrk would count 401s as speed."""
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the benchmark
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


def measure_rounds(
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
    """The CPU upstream's pause between streamed tokens (``tests/support/cpu_llm.py``)."""
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the benchmark
        f"{upstream.base_url}/admin/faults", data=json.dumps({"token_latency_ms": ms}).encode()
    )
    with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310
        reply.read()


def measure_streams(
    rows: Iterable[tuple[Any, ...]], *, api_key: str, requests: int
) -> list[dict[str, Any]]:
    """Time to first chunk and whole answer of each ``(label, server[, headers])``."""
    measured: list[dict[str, Any]] = []
    for label, server, *extra in rows:
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
            measured.append({"label": label, "first_chunk_ms": None, "total_ms": None,
                             "error": str(exc)[:200]})  # fmt: skip
            continue
        measured.append({"label": label, **dataclasses.asdict(timing)})
        print(f"streaming {label:<32} first chunk {timing.first_chunk_ms:7.2f} ms  "
              f"whole answer {timing.total_ms:7.1f} ms", flush=True)  # fmt: skip
    return measured


def floor_targets(
    children: Children, *, fast: servers.Server, redis: servers.Server | None, route: str
) -> list[Target]:
    """The floors in front of the canned upstream: aiohttp and lean, with ``redis`` also
    each with one EVALSHA per request (``passthrough.py``)."""
    url = fast.base_url + OPENAI_PATH
    kinds: list[tuple[str, servers.Server | None]] = [("aiohttp", None), ("lean", None)]
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
            Target(key, label, route, floor.base_url + OPENAI_PATH, CHAT_BODY, "fast", floor)
        )
    return targets


@dataclass(frozen=True, slots=True)
class Run:
    """One benchmark run: its directory of logs and raw results, the API key every server
    accepts (LiteLLM's master key must start with ``sk-``), the machine before it started."""

    workdir: Path
    api_key: str
    host: dict[str, Any]

    @classmethod
    def begin(cls, name: str) -> Run:
        host = machine()
        if host["load_before"] > report.BUSY_LOAD:
            # Other work on the machine competes with the servers: figures come out low.
            print(f"warning: load average is {host['load_before']} before the run; figures "
                  "measured on a busy machine understate every target", flush=True)  # fmt: skip
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        workdir = REPO / "bench" / "results" / f"{name}-{stamp}"
        workdir.mkdir(parents=True)
        print(f"logs and raw results in {workdir.relative_to(REPO)}", flush=True)
        return cls(workdir, "sk-bench-" + secrets.token_hex(16), host)

    def measure(
        self, args: argparse.Namespace, start: Start
    ) -> tuple[dict[str, Any], dict[str, report.Summary]]:
        """Start the servers, check, stream, drive, stop; the raw results and the medians."""
        wrk = load.wrk_version()  # fails before any server starts when wrk is missing
        with Children(self.workdir) as children:
            targets, streaming, upstream = start(children, self.api_key, self.workdir)
            for target in targets:
                smoke_test(target, self.api_key)
            started = time.monotonic()
            set_token_latency(upstream, STREAM_TOKEN_LATENCY_MS)
            stream_rows = measure_streams(
                streaming, api_key=self.api_key, requests=args.stream_requests
            )
            set_token_latency(upstream, 0.0)
            rounds = measure_rounds(targets, args=args, api_key=self.api_key, workdir=self.workdir)
            print(f"measured in {time.monotonic() - started:.0f} s; stopping servers", flush=True)
        summaries = report.summarize(
            rounds,
            labels={t.key: (t.label, t.route) for t in targets},
            baselines={t.key: t.baseline for t in targets},
        )
        results: dict[str, Any] = {
            "date": dt.date.today().isoformat(),
            "machine": {**self.host, "load_after": round(os.getloadavg()[0], 2)},
            "params": {
                "wrk": wrk.split(" [")[0],
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
            "streaming": {
                "token_latency_ms": STREAM_TOKEN_LATENCY_MS,
                "max_tokens": STREAM_MAX_TOKENS,
                "requests": args.stream_requests,
                "rows": stream_rows,
            },
        }
        return results, summaries

    def finish(
        self,
        results: dict[str, Any],
        section: str,
        *,
        markers: tuple[str, str],
        write_readme: bool,
        after: str | None = None,
    ) -> None:
        """Keep the raw results and the section beside the logs; print it; maybe the README."""
        results["markdown"] = section
        (self.workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print("\n" + section)
        if write_readme:
            report.write_readme(README, section, start=markers[0], end=markers[1], after=after)
            print("\nREADME.md updated", flush=True)
