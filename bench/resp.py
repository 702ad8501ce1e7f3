"""Client CPU per EVALSHA: Nexus' lean RESP client (``nexus.limits.resp``) against redis-py.

The limiter calls one Lua script per request, so what its Redis client costs per call is
part of every governed request. This starts a redis-server on a free loopback port, loads
one trivial script (the server's own work is then negligible and the same for both) and
calls it N times with each client: one call at a time, then in bursts of C concurrent calls
(the limiter under load, where the lean client pipelines a burst into one write). The
figure is this process's CPU time (user + system) per call, which, unlike latency, does
not depend on what else runs on the machine; redis-server's CPU is not counted.

    python -m bench resp [--calls 20000] [--concurrency 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as redis_py

from bench import servers
from bench.processes import Children
from nexus.limits.resp import Endpoint, RespClient, Script

SCRIPT = "return ARGV[1]"
Call = Callable[[], Awaitable[object]]


async def cpu_us_per_call(call: Call, *, calls: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per call, after a warm-up."""
    for _ in range(200):
        await call()
    started = time.process_time()
    if concurrency == 1:
        for _ in range(calls):
            await call()
    else:
        for _ in range(calls // concurrency):
            await asyncio.gather(*(call() for _ in range(concurrency)))
    return (time.process_time() - started) / calls * 1e6


async def measure(url: str, *, calls: int, concurrency: int, rounds: int) -> dict[str, float]:
    lean = RespClient(Endpoint.from_url(url))
    lean_script = Script(lean, SCRIPT)
    reference = redis_py.Redis.from_url(url)
    reference_script = reference.register_script(SCRIPT)

    async def lean_call() -> object:
        return await lean_script(keys=["bench:k"], args=["1"])

    async def reference_call() -> object:
        return await reference_script(keys=["bench:k"], args=["1"])

    results: dict[str, list[float]] = {}
    try:
        for _ in range(rounds):
            for name, call in (("nexus", lean_call), ("redis-py", reference_call)):
                for width in (1, concurrency):
                    figure = await cpu_us_per_call(call, calls=calls, concurrency=width)
                    results.setdefault(f"{name} c={width}", []).append(figure)
    finally:
        await lean.close()
        await reference.aclose()
    return {key: statistics.median(values) for key, values in results.items()}


def main(argv: list[str], *, prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-resp-") as logs, Children(Path(logs)) as kids:
        server = servers.start_redis(kids)
        url = f"redis://127.0.0.1:{server.port}/0"
        figures = asyncio.run(
            measure(url, calls=args.calls, concurrency=args.concurrency, rounds=args.rounds)
        )
    print(f"client CPU per EVALSHA, µs (median of {args.rounds} rounds of {args.calls} calls)")
    print("| concurrency | nexus.limits.resp | redis-py | saved |")
    print("|---|---|---|---|")
    for width in (1, args.concurrency):
        lean, ref = figures[f"nexus c={width}"], figures[f"redis-py c={width}"]
        print(f"| {width} | {lean:.1f} | {ref:.1f} | {ref - lean:.1f} |")
    return 0
