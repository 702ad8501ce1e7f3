"""What each part of the transformer's governed path costs, against the lean floor, in one run.

Issue 11 asks the transformer's full path for 0.6 times the lean Redis floor's throughput.
This script shows where the distance comes from. In front of the canned upstream
(``fast_upstream.py``), with one Redis, it measures at 32 connections:

- the lean Redis floor (``passthrough.py --client lean``: uvicorn, raw connections, one
  ``EVALSHA``), the hop the target is measured against;
- the same floor on Nexus' own parts (``--client nexus --server edge``: the edge client
  with its timeouts and pool checks, the ``EdgeProtocol`` server with its limits);
- the transformer with everything on, with each governed part switched off in turn, and
  with all of them off (``ablated_transformer.py``).

A row's CPU per request is the measured server's own (user + system from ``/proc``); the
difference to the full path is what that part costs. Rounds alternate the rows, and each
figure is a median.

    python -m bench costs [--rounds 3] [--duration 5] [--write-readme]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from bench import load, report, servers
from bench.ablated_transformer import PARTS
from bench.harness import CHAT_BODY, MODEL, OPENAI_PATH, Run
from bench.processes import Children, group_cpu_seconds

START, END = "<!-- bench:costs:start -->", "<!-- bench:costs:end -->"


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    server: servers.Server


@dataclass(frozen=True, slots=True)
class Figures:
    rps: float
    cpu_us: float


def start_rows(children: Children, *, api_key: str) -> list[Row]:
    redis = servers.start_redis(children)
    fast = servers.start_fast_upstream(children)
    url = fast.base_url + OPENAI_PATH
    rows = [
        Row("floor", "lean floor + hiredis EVALSHA (uvicorn, raw connections)",
            servers.start_passthrough(children, name="floor", upstream_url=url,
                                      client="lean", redis=redis)),
        Row("floor-edge", "the same floor on Nexus' edge client and server protocol",
            servers.start_passthrough(children, name="floor-edge", upstream_url=url,
                                      client="nexus", redis=redis, server="edge")),
    ]  # fmt: skip
    variants = [("none", "transformer, full governed path")]
    variants += [(part, f"transformer without {part}") for part in PARTS]
    variants.append((",".join(PARTS), "transformer without any of them"))
    for without, label in variants:
        name = "nexus-" + without.replace(",", "-")
        server = servers.start_nexus(
            children, upstream=fast, redis=redis, model=MODEL, api_key=api_key, name=name,
            entry=("-m", "bench.ablated_transformer", "--without", without, "--"),
        )  # fmt: skip
        rows.append(Row(name, label, server))
    return rows


def measure(rows: list[Row], *, args: argparse.Namespace, script: Path) -> dict[str, Figures]:
    seen: dict[str, list[Figures]] = {row.key: [] for row in rows}
    for n in range(1, args.rounds + 1):
        for row in rows:
            url = row.server.base_url + OPENAI_PATH
            common = {"script": script, "threads": 1, "connections": args.connections}
            load.run(url, seconds=args.warmup, **common)
            before = group_cpu_seconds(row.server.child.proc.pid)
            cell = load.run(url, seconds=args.duration, **common)
            cpu = group_cpu_seconds(row.server.child.proc.pid) - before
            if cell.errors or not cell.requests:
                raise SystemExit(f"{row.label}: {cell.errors} errors\n{row.server.child.tail()}")
            figures = Figures(cell.rps, cpu / cell.requests * 1e6)
            seen[row.key].append(figures)
            print(f"round {n}/{args.rounds} {row.label:<58} {figures.rps:8.0f} req/s "
                  f"{figures.cpu_us:6.0f} µs/req", flush=True)  # fmt: skip
    median = statistics.median
    return {
        key: Figures(median(f.rps for f in got), median(f.cpu_us for f in got))
        for key, got in seen.items()
    }


def markdown(rows: list[Row], figures: dict[str, Figures], *, args: argparse.Namespace) -> str:
    floor, full = figures["floor"], figures["nexus-none"]
    lines = [
        "| server | req/s @32 conn | ÷ lean Redis floor | CPU per request "
        "| against the full path |",
        "|---|--:|--:|--:|--:|",
    ]
    for row in rows:
        f = figures[row.key]
        delta = "—" if row.key == "nexus-none" else f"{f.cpu_us - full.cpu_us:+.0f} µs"
        ratio = report.fmt_ratio(f.rps / floor.rps)
        lines.append(f"| {row.label} | {f.rps:,.0f} | {ratio} | {f.cpu_us:.0f} µs | {delta} |")
    load_now = os.getloadavg()[0]
    lines += [
        "",
        f"Measured {dt.date.today().isoformat()} by `python -m bench costs` on "
        f"{os.cpu_count()} CPUs: wrk, 1 thread, {args.connections} connections, "
        f"{args.duration:g} s per cell after a "
        f"{args.warmup:g} s warm-up, medians of {args.rounds} rounds; every server one process "
        f"on 127.0.0.1 in front of the canned upstream, one Redis; 1-minute load average "
        f"{load_now:.2f} after. The last column is the row's CPU per request minus "
        "the full path's: what switching that part off saves.",
    ]
    return "\n".join(lines)


def main(argv: list[str], *, prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    run = Run.begin("costs")
    with Children(run.workdir) as children:
        rows = start_rows(children, api_key=run.api_key)
        script = load.write_script(run.workdir / "chat.lua", body=CHAT_BODY, api_key=run.api_key)
        figures = measure(rows, args=args, script=script)
    results = {"figures": {key: dataclasses.asdict(f) for key, f in figures.items()}}
    run.finish(results, markdown(rows, figures, args=args), markers=(START, END),
               write_readme=args.write_readme)  # fmt: skip
    return 0
