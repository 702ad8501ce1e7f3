"""The limiter's cost to Redis, before and after issue 22: CPU per call and memory per key.

Before: the per-admission sliding logs (``acquire.lua`` of commit ``BEFORE``, read with
``git show``: one sorted-set entry per admission and per reservation). After: the one-second
buckets of ``platform/nexus/limits/acquire.lua`` (at most 61 counters per hash). Each
runs on its own fresh redis-server on a free loopback port, in the same run, for:

- one hot key: ``--hot`` admissions on one principal and model, all inside one window
  (the case that made the logs grow: ~450,000 entries at 7,600 admissions a second);
- ``--keys`` keys: one admission each (many tenants, each seen once a minute).

Calls a second one Redis holds come from ``redis-benchmark`` calling the script on the
same server (50 connections, pipelines of 16; the redis-benchmark process shares the
machine). Redis' CPU per call is ``INFO commandstats`` ``usec_per_call`` of ``EVALSHA`` (the
script's own time) and ``INFO cpu`` user + system over the calls (with the network I/O);
memory is ``MEMORY USAGE`` of the hot key's Redis keys, and ``used_memory`` grown by the
run per key for the many keys. Calls go 64 at a time over Nexus'
pipelined client (``nexus.limits.resp``), each reserving 50 tokens.

    python -m bench limiter-redis [--hot 100000] [--keys 100000] [--write-readme]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import datetime as dt
import hashlib
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from bench import servers
from bench.harness import Run
from bench.processes import REPO, Children, installed
from nexus.limits.redis_backend import RedisWindow
from nexus.limits.resp import Endpoint, RespClient, Script

BEFORE = "3274255"  # the last commit with the sliding logs
START, END = "<!-- bench:limiter-redis:start -->", "<!-- bench:limiter-redis:end -->"
HIGH = 10**9  # limits no call reaches: every call admitted, every call writes


@dataclass(frozen=True, slots=True)
class Scheme:
    name: str
    source: str

    def keys(self, key: str) -> list[str]:
        if self.name == "before":  # the sliding logs' three keys
            base = f"nexus:rl:{{{key}}}"
            return [f"{base}:req", f"{base}:tok", f"{base}:toktotal"]
        return RedisWindow.keys(key)

    def benchmark_args(self, *, distinct: bool) -> list[str]:
        """``EVALSHA``'s keys and arguments for redis-benchmark (``__rand_int__``: -r)."""
        keys = self.keys("k__rand_int__" if distinct else "hot")
        args = [str(a) for a in self.args(0)]
        if self.name == "before":
            args[-1] = "m__rand_int__"  # a member per call
        return [str(len(keys)), *keys, *args]

    def args(self, i: int) -> list[str | int]:
        if self.name == "before":  # window ms, rpm, tpm, tokens, member
            return [60_000, HIGH, HIGH, 50, f"bench-{i}"]
        return [60, HIGH, HIGH, 50]  # window s, rpm, tpm, tokens


@dataclass(frozen=True, slots=True)
class Cell:
    usec_per_call: float
    cpu_us_per_call: float
    bytes_per_key: float
    calls_per_second: float = 0.0


def schemes() -> list[Scheme]:
    old = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE}:platform/nexus/limits/acquire.lua"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    new = (REPO / "platform" / "nexus" / "limits" / "acquire.lua").read_text()
    return [Scheme("before", old), Scheme("after", new)]


async def run_cell(port: int, scheme: Scheme, *, calls: int, distinct: bool) -> Cell:
    client = RespClient(Endpoint("127.0.0.1", port, 0, None, None, tls=False))
    script = Script(client, scheme.source)
    await script(scheme.keys("warm"), scheme.args(0))  # loads the script
    await client.call("DEL", *scheme.keys("warm"))
    await client.call("CONFIG", "RESETSTAT")
    memory0 = _info(await client.call("INFO", "memory"))["used_memory"]
    cpu0 = _cpu(_info(await client.call("INFO", "cpu")))
    for start in range(0, calls, 64):
        batch = range(start, min(calls, start + 64))
        await asyncio.gather(
            *(script(scheme.keys(f"k{i}" if distinct else "hot"), scheme.args(i)) for i in batch)
        )
    cpu1 = _cpu(_info(await client.call("INFO", "cpu")))
    memory1 = _info(await client.call("INFO", "memory"))["used_memory"]
    if not distinct:  # the key's own bytes: used_memory also moves with buffers and Lua
        usage = [
            await client.call("MEMORY", "USAGE", k, "SAMPLES", "0") for k in scheme.keys("hot")
        ]
        memory0, memory1 = 0, sum(u or 0 for u in usage)
    stats = _info(await client.call("INFO", "commandstats"))["cmdstat_evalsha"]
    await flush(client)
    await client.close()
    return Cell(
        usec_per_call=float(stats["usec_per_call"]),
        cpu_us_per_call=(cpu1 - cpu0) * 1e6 / calls,
        bytes_per_key=(memory1 - memory0) / (calls if distinct else 1),
    )


def benchmark_rps(port: int, scheme: Scheme, *, distinct: bool, calls: int) -> float:
    """Calls a second one redis-server answers: redis-benchmark (C, 50 connections,
    pipelines of 16) calling the script, the most this Redis holds on this machine."""
    binary = installed("redis-benchmark")  # it ships with redis-server
    sha = hashlib.sha1(scheme.source.encode(), usedforsecurity=False).hexdigest()
    run = subprocess.run(
        [binary, "-p", str(port), "-n", str(calls), "-c", "50", "-P", "16",
         "-r", "100000000" if scheme.name == "before" else str(calls), "--csv",
         "EVALSHA", sha, *scheme.benchmark_args(distinct=distinct)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    row = next(csv.reader(run.stdout.splitlines()[1:]))
    return float(row[1])


async def full_window_bytes(port: int) -> int:
    """``MEMORY USAGE`` of a key with traffic in each of the 61 seconds of its window, written
    field by field as ``acquire.lua`` writes it (the run above lasts less than a window)."""
    client = RespClient(Endpoint("127.0.0.1", port, 0, None, None, tls=False))
    seconds = int((await client.call("TIME"))[0])
    total = 0
    for key, per_second in zip(RedisWindow.keys("full"), (7_600, 380_000), strict=True):
        fields: list[str | int] = []
        for second in range(seconds - 60, seconds + 1):
            fields += [second, per_second]
        await client.call("HSET", key, *fields, "n", 61 * per_second, "lo", seconds - 60)
        total += await client.call("MEMORY", "USAGE", key, "SAMPLES", "0")
    await flush(client)
    await client.close()
    return total


async def flush(client: RespClient) -> None:
    """Empty Redis for the next cell: a synchronous flush of 300,000 keys outlasts the
    client's timeout, and the next cell's memory baseline waits for the lazy free."""
    await client.call("FLUSHALL", "ASYNC")
    for _ in range(1200):  # a minute at most
        if not _info(await client.call("INFO", "memory"))["lazyfree_pending_objects"]:
            return
        await asyncio.sleep(0.05)


def _cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _info(raw: bytes) -> dict[str, Any]:
    """``INFO`` text as a dict; ``cmdstat_*`` lines become dicts of their fields."""
    out: dict[str, Any] = {}
    for line in raw.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition(":")
        if "=" in value:
            out[name] = dict(field.split("=", 1) for field in value.split(","))
        else:
            out[name] = int(value) if value.lstrip("-").isdigit() else value
    return out


def markdown(cells: dict[tuple[str, str], Cell], full: int, *, hot: int, keys: int) -> str:
    rows = [(f"one hot key, {hot:,} admissions in its window", "hot"),
            (f"{keys:,} keys, one admission each", "keys")]  # fmt: skip
    lines = [
        "| workload | scheme | Redis µs per call (script) | Redis CPU µs per call "
        "(with I/O) | calls/s one Redis holds | bytes per key |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for label, workload in rows:
        for scheme in ("before", "after"):
            cell = cells[(workload, scheme)]
            lines.append(
                f"| {label} | {scheme} | {cell.usec_per_call:.1f} | "
                f"{cell.cpu_us_per_call:.1f} | {cell.calls_per_second:,.0f} | "
                f"{cell.bytes_per_key:,.0f} |"
            )
    lines.append(
        f"| one key with traffic in all 61 seconds of its window | after | | | | {full:,} |"
    )
    load_now = os.getloadavg()[0]
    lines += [
        "",
        f"Measured {dt.date.today().isoformat()} by `python -m bench limiter-redis` on "
        f"{os.cpu_count()} CPUs, one fresh redis-server per scheme, calls 64 at a time, "
        f"each reserving 50 tokens; calls/s from redis-benchmark (50 connections, pipelines of "
        f"16) on the same server; 1-minute load average {load_now:.2f} after. Before: the "
        f"sliding logs of `{BEFORE}`; after: one-second buckets (`docs/redis.md`).",
    ]
    return "\n".join(lines)


async def measure(
    children: Children, *, hot: int, keys: int
) -> tuple[dict[tuple[str, str], Cell], int]:
    cells = {}
    for scheme in schemes():
        redis = servers.start_redis(children)
        for workload, calls, distinct in (("hot", hot, False), ("keys", keys, True)):
            cell = await run_cell(redis.port, scheme, calls=calls, distinct=distinct)
            rps = benchmark_rps(redis.port, scheme, distinct=distinct, calls=calls)
            client = RespClient(Endpoint("127.0.0.1", redis.port, 0, None, None, tls=False))
            await flush(client)
            await client.close()
            cells[(workload, scheme.name)] = dataclasses.replace(cell, calls_per_second=rps)
        print(scheme.name, cells[("hot", scheme.name)], cells[("keys", scheme.name)], flush=True)
    return cells, await full_window_bytes(redis.port)


def main(argv: list[str], *, prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hot", type=int, default=100_000, help="admissions on the hot key")
    parser.add_argument("--keys", type=int, default=100_000, help="distinct keys")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    run = Run.begin("limiter-redis")
    with Children(run.workdir) as children:
        cells, full = asyncio.run(measure(children, hot=args.hot, keys=args.keys))
    results = {"cells": {" ".join(k): dataclasses.asdict(c) for k, c in cells.items()},
               "full_window_bytes": full}  # fmt: skip
    run.finish(results, markdown(cells, full, hot=args.hot, keys=args.keys),
               markers=(START, END), write_readme=args.write_readme)  # fmt: skip
    return 0
