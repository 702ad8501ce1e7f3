"""Chaos run: chat traffic through ``chat-fallback`` while the primary's processes are killed.

Runs against a platform started with ``nexus up`` (its ``<state>/endpoints.json`` gives the
graph's URL and the API key; the supervisor's ``<state>/run/<name>.pid`` files give the
processes). At ``--rate`` requests a second (open loop: a slow answer does not slow the
sender) for ``--duration`` seconds it SIGKILLs every live predictor worker of the primary
InferenceService every ``--kill-every`` seconds, and its transformer ``--transformer-kills``
times, spread over the run. The local controller restarts both, as kubelet restarts a
container. Every request counts as answered (200 with ``choices``) or failed (anything
else, by status and answering step); the figures are printed as one JSON object, and
``--write-readme`` puts them into README.md between the ``bench:chaos`` markers.

The defaults are issue 11's run: 150 s at 8 requests/s, the predictor killed every 25 s,
the transformer twice.

    python -m bench chaos --state-dir .nexus [--write-readme]

``--stream`` (issue 24) sends the same traffic as streams (``include_usage`` asked) under
the same kills and counts streams started (a 200 head), completed (one answer: no error
event, one role chunk, a ``finish_reason``, ``[DONE]`` once and last) and continued (the
router's ``nexus_continuation`` trailer: a later step finished a broken stream); its
figures go between the ``bench:chaos-stream`` markers. Use a ``--max-tokens`` long enough
for kills to land mid-stream (the CPU worker streams a token every 2 ms).

Keep ``--rate`` below the key's limit (``GATEWAY_RATE_LIMIT_PER_MINUTE``, 600 by default):
a 429 is the key's limit, not a fault of the graph.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

from bench.harness import README
from bench.report import write_readme
from nexus.cli.demo import CHAT_PATH
from nexus.edge.wire import STEP_HEADER
from nexus.router.continuation import TRAILER

MAX_DURATION_S = 600.0
STEP = STEP_HEADER.decode()
MARKERS = ("<!-- bench:chaos:start -->", "<!-- bench:chaos:end -->")
STREAM_MARKERS = ("<!-- bench:chaos-stream:start -->", "<!-- bench:chaos-stream:end -->")


@dataclass
class Tally:
    """What came back; ``failures`` keys read ``<status> <step>`` (status 0: no answer)."""

    sent: int = 0
    answered: int = 0
    by_step: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    fallbacks: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)
    streams_started: int = 0  # --stream: 200 heads; ``answered`` counts complete answers
    continued: int = 0

    def report(self, seconds: float) -> dict[str, object]:
        ordered = sorted(self.latencies_ms)
        return {
            "seconds": round(seconds, 1),
            "sent": self.sent,
            "answered": self.answered,
            "failed": self.sent - self.answered,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "answered_by_step": dict(self.by_step),
            "fallbacks": self.fallbacks,
            "p50_ms": round(statistics.median(ordered), 1) if ordered else None,
            "p95_ms": round(_percentile(ordered, 0.95), 1) if ordered else None,
            "failures": dict(self.failures),
            "kills": self.kills,
            **({"streams_started": self.streams_started, "streams_completed": self.answered,
                "streams_continued": self.continued} if self.streams_started else {}),
        }  # fmt: skip


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values (the 95th of 1,200 is the 1,140th)."""
    return ordered[max(0, min(len(ordered) - 1, round(q * len(ordered)) - 1))]


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


def whole_answer(payload: bytes) -> tuple[bool, bool]:
    """(a stream is one complete answer, a later step continued it) for an SSE body."""
    events = [event for event in payload.split(b"\n\n") if event]
    if not events or events[-1] != b"data: [DONE]" or payload.count(b"[DONE]") != 1:
        return False, False
    if any(event.startswith(b"event:") for event in events):
        return False, False
    roles = finishes = 0
    continued = False
    for event in events[:-1]:
        try:
            chunk = orjson.loads(event.removeprefix(b"data:"))
        except orjson.JSONDecodeError:
            return False, False
        continued = continued or TRAILER in chunk
        for choice in chunk.get("choices") or ():
            roles += "role" in (choice.get("delta") or {})
            finishes += choice.get("finish_reason") is not None
    return roles == 1 and finishes == 1, continued


async def one_call(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    tally: Tally,
    primary: str,
    *,
    stream: bool,
) -> None:
    """One request; a stream counts as started at its 200 head, completed when whole."""
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            status = response.status
            step = response.headers.get(STEP, "?")
            if stream and status == 200:
                tally.streams_started += 1
            payload = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        tally.statuses[0] += 1
        tally.failures[f"0 {type(exc).__name__}"] += 1
        return
    tally.latencies_ms.append((time.perf_counter() - started) * 1000)
    tally.statuses[status] += 1
    # The router names the step whose answer it returns; any other than the primary's
    # (the graph's first step) means the fallback answered.
    if step not in ("?", primary):
        tally.fallbacks += 1
    if status != 200:
        tally.failures[f"{status} {step}"] += 1
        return
    whole, continued = whole_answer(payload) if stream else (has_choices(payload), False)
    if whole:
        tally.answered += 1
        tally.by_step[step] += 1
        tally.continued += continued
    elif stream:
        reason = "error event" if b"event: error" in payload else "incomplete"
        tally.failures[f"{status} {step} {reason}"] += 1
    else:
        tally.failures[f"{status} {step}"] += 1


def has_choices(payload: bytes) -> bool:
    """A whole JSON answer with at least one choice."""
    try:
        return bool(orjson.loads(payload).get("choices"))
    except (orjson.JSONDecodeError, AttributeError):
        return False


async def run(args: argparse.Namespace) -> tuple[Tally, Tally | None, float]:
    """Send, kill and count; the tallies (graph, ``--baseline-url``) and the run's seconds."""
    endpoints = json.loads((args.state_dir / "endpoints.json").read_text())
    base = args.url or endpoints["graphs"][args.graph]
    url = base.rstrip("/") + CHAT_PATH
    headers = {"Authorization": f"Bearer {endpoints['api_key']}",
               "Content-Type": "application/json"}  # fmt: skip
    request: dict[str, object] = {"model": "chat", "max_tokens": args.max_tokens,
                                  "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
    if args.stream:
        request |= {"stream": True, "stream_options": {"include_usage": True}}
    body = orjson.dumps(request)
    predictor, transformer = f"{args.isvc}-predictor-", f"{args.isvc}-transformer-"
    if not live_pids(args.state_dir, predictor) or not live_pids(args.state_dir, transformer):
        raise SystemExit(f"no live {predictor}* / {transformer}* process under {args.state_dir}")
    duration = min(args.duration, MAX_DURATION_S)
    transformer_at = [duration * (i + 1) / (args.transformer_kills + 1) + 1.0
                      for i in range(args.transformer_kills)]  # fmt: skip
    tally = Tally()
    baseline = Tally() if args.baseline_url else None
    baseline_url = args.baseline_url.rstrip("/") + CHAT_PATH
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
            for target, counts in ((url, tally), (baseline_url, baseline)):
                if counts is None:
                    continue
                call = one_call(session, target, body, headers, counts, args.isvc,
                                stream=args.stream)  # fmt: skip
                task = asyncio.create_task(call)
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                counts.sent += 1
            await asyncio.sleep(max(0.0, started + tally.sent / args.rate - time.monotonic()))
        await asyncio.gather(*tasks)
    return tally, baseline, time.monotonic() - started


def parse_args(argv: list[str], prog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".nexus"))
    parser.add_argument("--graph", default="chat-fallback")
    parser.add_argument("--url", default="", help="a router of the graph started by hand")
    parser.add_argument("--isvc", default="llama-8b", help="the primary InferenceService")
    parser.add_argument("--rate", type=float, default=8.0, help="requests a second")
    parser.add_argument("--duration", type=float, default=150.0,
                        help=f"seconds of traffic (at most {MAX_DURATION_S:.0f})")  # fmt: skip
    parser.add_argument("--kill-every", type=float, default=25.0,
                        help="seconds between SIGKILLs of the primary's predictor")  # fmt: skip
    parser.add_argument("--transformer-kills", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--request-timeout", type=float, default=60.0)
    parser.add_argument("--baseline-url", default="",
                        help="a second router of the graph (say --continuation off), "
                        "sent the same traffic side by side")  # fmt: skip
    parser.add_argument("--stream", action="store_true",
                        help="streams: started, completed, continued")  # fmt: skip
    parser.add_argument("--write-readme", action="store_true",
                        help="put the figures into README.md (bench:chaos markers)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.kill_every <= 0:
        parser.error("--rate, --duration and --kill-every must be positive")
    return args


def markdown(tally: Tally, seconds: float, args: argparse.Namespace) -> str:
    """The README section: what was run, what came back, and how fast."""
    figures = tally.report(seconds)
    statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(tally.statuses.items()))
    steps = ", ".join(f"{k} {v:,}" for k, v in tally.by_step.items())
    failures = ", ".join(f"{k} ({v})" for k, v in tally.failures.items()) or "none"
    predictor = sum(f" {args.isvc}-predictor-" in k for k in tally.kills)
    transformer = sum(f" {args.isvc}-transformer-" in k for k in tally.kills)
    return "\n".join([
        "| sent | answered | failed | statuses | answered by step | fallbacks | p50 | p95 |",
        "|--:|--:|--:|---|---|--:|--:|--:|",
        f"| {tally.sent:,} | {tally.answered:,} | {tally.sent - tally.answered:,} | {statuses} "
        f"| {steps} | {tally.fallbacks:,} | {figures['p50_ms']} ms | {figures['p95_ms']} ms |",
        "",
        f"Failures: {failures}. Measured {dt.date.today().isoformat()} by `python -m bench chaos "
        f"--write-readme` on `nexus up` (CPU LLMs, {os.cpu_count()} CPUs shared with other work): "
        f"{args.rate:g} requests/s for {seconds:.0f} s through `{args.graph}`, {predictor} "
        f"SIGKILLs of `{args.isvc}`'s predictor (every {args.kill_every:g} s) and {transformer} "
        "of its transformer; latency is of the requests that got an HTTP answer.",
    ])  # fmt: skip


def stream_markdown(
    tally: Tally, baseline: Tally | None, seconds: float, args: argparse.Namespace
) -> str:
    """The README section of a ``--stream`` run: one row per router."""
    rows = [("the graph's router", tally)] + ([("`--baseline-url`", baseline)] if baseline else [])
    lines = [
        "| router | streams sent | started | completed | continued by the fallback | "
        "started on the fallback | p50 | p95 |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    for name, counts in rows:
        figures = counts.report(seconds)
        lines.append(
            f"| {name} | {counts.sent:,} | {counts.streams_started:,} | {counts.answered:,} | "
            f"{counts.continued:,} | {counts.fallbacks:,} | {figures['p50_ms']} ms | "
            f"{figures['p95_ms']} ms |"
        )
        failures = ", ".join(f"{k} ({v})" for k, v in counts.failures.items()) or "none"
        notes.append(f"{name}: {failures}")
    predictor = sum(f" {args.isvc}-predictor-" in k for k in tally.kills)
    transformer = sum(f" {args.isvc}-transformer-" in k for k in tally.kills)
    return "\n".join([
        *lines,
        "",
        f"Not completed: {'; '.join(notes)}. Measured {dt.date.today().isoformat()} by `python -m "
        f"bench chaos --stream --write-readme` on `nexus up` (CPU LLMs, {os.cpu_count()} CPUs "
        f"shared with other work): {args.rate:g} streams/s of {args.max_tokens} tokens for "
        f"{seconds:.0f} s through `{args.graph}`, {predictor} SIGKILLs of `{args.isvc}`'s "
        f"predictor (every {args.kill_every:g} s) and {transformer} of its transformer; "
        "latency is to the end of the stream.",
    ])  # fmt: skip


def main(argv: list[str], *, prog: str) -> int:
    args = parse_args(argv, prog)
    tally, baseline, seconds = asyncio.run(run(args))
    print(json.dumps(tally.report(seconds), indent=2))
    if baseline is not None:
        print(json.dumps({"baseline": baseline.report(seconds)}, indent=2))
    if args.write_readme:
        section = stream_markdown(tally, baseline, seconds, args) if args.stream else None
        start, end = STREAM_MARKERS if args.stream else MARKERS
        write_readme(README, section or markdown(tally, seconds, args), start=start, end=end)
        print("README.md updated")
    return 0 if tally.sent == tally.answered else 1
