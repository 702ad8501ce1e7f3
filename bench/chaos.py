"""Chaos run: chat traffic through ``chat-fallback`` while the primary's processes are killed.

Runs against a platform started with ``nexus up`` (its ``<state>/endpoints.json`` gives the
graph's URL and the API key; the supervisor's ``<state>/run/<name>.pid`` files give the
processes). At ``--rate`` requests a second (open loop: a slow answer does not slow the
sender) for ``--duration`` seconds it SIGKILLs every live predictor worker of the primary
InferenceService every ``--kill-every`` seconds, and its transformer ``--transformer-kills``
times, spread over the run. The local controller restarts both, as kubelet restarts a
container. Every request counts as answered (200 with ``choices``) or failed (anything
else, by status and answering step); the figures are printed as one JSON object.

    python -m bench.chaos --state-dir .nexus --duration 60

Keep ``--rate`` below the key's limit (``GATEWAY_RATE_LIMIT_PER_MINUTE``, 600 by default):
a 429 is the key's limit, not a fault of the graph.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

MAX_DURATION_S = 600.0


@dataclass
class Tally:
    """What came back; ``failures`` keys read ``<status> <step>`` (status 0: no answer)."""

    sent: int = 0
    answered: int = 0
    by_step: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    kills: list[str] = field(default_factory=list)

    def report(self, seconds: float) -> dict[str, object]:
        return {
            "seconds": round(seconds, 1),
            "sent": self.sent,
            "answered": self.answered,
            "failed": self.sent - self.answered,
            "answered_by_step": dict(self.by_step),
            "failures": dict(self.failures),
            "kills": self.kills,
        }


def live_pids(state: Path, prefix: str) -> dict[str, int]:
    """Supervisor processes whose name starts with ``prefix`` and that are alive."""
    found: dict[str, int] = {}
    for path in sorted((state / "run").glob(f"{prefix}*.pid")):
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, OSError):
            continue
        found[path.stem] = pid
    return found


def kill(state: Path, prefix: str, tally: Tally, started: float) -> None:
    """SIGKILL every live process named ``prefix*`` (its process group: workers included)."""
    for name, pid in live_pids(state, prefix).items():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        tally.kills.append(f"{time.monotonic() - started:5.1f}s {name}")


async def one_request(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], tally: Tally
) -> None:
    try:
        async with session.post(url, data=body, headers=headers) as response:
            payload = await response.read()
            step = response.headers.get("x-nexus-graph-step", "?")
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.failures[f"0 {type(exc).__name__}"] += 1
        return
    ok = False
    if status == 200:
        try:
            ok = bool(orjson.loads(payload).get("choices"))
        except (orjson.JSONDecodeError, AttributeError):
            ok = False
    if ok:
        tally.answered += 1
        tally.by_step[step] += 1
    else:
        tally.failures[f"{status} {step}"] += 1


async def run(args: argparse.Namespace) -> dict[str, object]:
    endpoints = json.loads((args.state_dir / "endpoints.json").read_text())
    base = args.url or endpoints["graphs"][args.graph]
    url = base.rstrip("/") + "/openai/v1/chat/completions"
    headers = {"Authorization": f"Bearer {endpoints['api_key']}",
               "Content-Type": "application/json"}  # fmt: skip
    body = orjson.dumps({"model": "chat", "max_tokens": args.max_tokens,
                         "messages": [{"role": "user", "content": "hello"}]})  # fmt: skip
    predictor, transformer = f"{args.isvc}-predictor-", f"{args.isvc}-transformer-"
    if not live_pids(args.state_dir, predictor) or not live_pids(args.state_dir, transformer):
        raise SystemExit(f"no live {predictor}* / {transformer}* process under {args.state_dir}")
    duration = min(args.duration, MAX_DURATION_S)
    transformer_at = [duration * (i + 1) / (args.transformer_kills + 1) + 1.0
                      for i in range(args.transformer_kills)]  # fmt: skip
    tally = Tally()
    tasks: set[asyncio.Task[None]] = set()
    timeout = aiohttp.ClientTimeout(total=args.request_timeout)
    started = time.monotonic()
    next_kill = args.kill_every
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while (elapsed := time.monotonic() - started) < duration:
            if elapsed >= next_kill:
                kill(args.state_dir, predictor, tally, started)
                next_kill += args.kill_every
            if transformer_at and elapsed >= transformer_at[0]:
                transformer_at.pop(0)
                kill(args.state_dir, transformer, tally, started)
            task = asyncio.create_task(one_request(session, url, body, headers, tally))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            tally.sent += 1
            await asyncio.sleep(max(0.0, started + tally.sent / args.rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return tally.report(time.monotonic() - started)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".nexus"))
    parser.add_argument("--graph", default="chat-fallback")
    parser.add_argument("--url", default="", help="a router of the graph started by hand")
    parser.add_argument("--isvc", default="llama-8b", help="the primary InferenceService")
    parser.add_argument("--rate", type=float, default=8.0, help="requests a second")
    parser.add_argument("--duration", type=float, default=60.0,
                        help=f"seconds of traffic (at most {MAX_DURATION_S:.0f})")  # fmt: skip
    parser.add_argument("--kill-every", type=float, default=25.0,
                        help="seconds between SIGKILLs of the primary's predictor")  # fmt: skip
    parser.add_argument("--transformer-kills", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--request-timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.kill_every <= 0:
        parser.error("--rate, --duration and --kill-every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    report = asyncio.run(run(parse_args(argv)))
    print(json.dumps(report, indent=2))
    return 0 if report["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
