"""Sliding-window limits kept in this process (one replica, or Redis unreachable).

The in-process twin of ``acquire.lua``, with the same semantics: per key, one counter
per second with traffic in it for requests and one for tokens, at most ``window`` + 1
each; an admission counts until its second's bucket is older than the window (between
60 and 61 seconds). The clock is injected so tests can move time without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nexus.limits.decision import WINDOW_SECONDS, Decision, Quota

Clock = Callable[[], float]
SWEEP_EVERY = 10_000


@dataclass(slots=True)
class _Buckets:
    """Counters by second, oldest first (the clock only moves forward), and their sum."""

    counts: dict[int, int] = field(default_factory=dict)
    total: int = 0

    def slide(self, oldest: int) -> None:
        counts = self.counts
        while counts:
            second = next(iter(counts))
            if second >= oldest:
                return
            self.total -= counts.pop(second)

    def add(self, second: int, amount: int) -> None:
        self.counts[second] = self.counts.get(second, 0) + amount
        self.total += amount

    def reset(self, now: float, window: int) -> float:
        """Seconds until the oldest bucket leaves the window (0: none held)."""
        if not self.counts:
            return 0.0
        return next(iter(self.counts)) + window + 1 - now

    def wait_for(self, excess: int, now: float, window: int) -> float:
        """Seconds until the oldest buckets holding ``excess`` have left the window."""
        for second, count in self.counts.items():
            excess -= count
            if excess <= 0:
                return second + window + 1 - now
        return float(window)


@dataclass(slots=True)
class _Window:
    requests: _Buckets = field(default_factory=_Buckets)
    tokens: _Buckets = field(default_factory=_Buckets)


class InProcessWindow:
    """Sliding-window request and token limits for the keys seen by this process."""

    def __init__(self, *, clock: Clock = time.monotonic, window: int = WINDOW_SECONDS) -> None:
        self._clock = clock
        self._window = window
        self._windows: dict[str, _Window] = {}
        self._calls = 0

    async def acquire(self, key: str, quota: Quota, tokens: int) -> Decision:
        return self.acquire_now(key, quota, tokens)

    def acquire_now(self, key: str, quota: Quota, tokens: int) -> Decision:
        now = self._clock()
        second = math.floor(now)
        self._maybe_sweep(second)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        requests, reserved = window.requests, window.tokens
        oldest = second - self._window
        requests.slide(oldest)
        reserved.slide(oldest)
        rpm, tpm = quota.requests_per_minute, quota.tokens_per_minute
        if quota.count_request and rpm and requests.total >= rpm:
            wait = requests.wait_for(requests.total - rpm + 1, now, self._window)
            return self._decision(window, quota, now, second, "requests", wait)
        if tpm and reserved.total + tokens > tpm:
            wait = float(self._window)
            if tokens <= tpm:
                wait = reserved.wait_for(reserved.total + tokens - tpm, now, self._window)
            return self._decision(window, quota, now, second, "tokens", wait)
        if quota.count_request:
            requests.add(second, 1)
        if tokens and tpm:
            reserved.add(second, tokens)
        return self._decision(window, quota, now, second, None, None)

    async def settle(self, key: str, second: int, reserved: int, actual: int) -> None:
        window = self._windows.get(key)
        held = window.tokens.counts.get(second) if window else None
        if window is None or held is None:
            return  # its bucket already left the window: nothing left to correct
        delta = max(actual - reserved, -held)
        window.tokens.counts[second] = held + delta
        window.tokens.total += delta

    def _decision(
        self,
        window: _Window,
        quota: Quota,
        now: float,
        second: int,
        reason: str | None,
        wait: float | None,
    ) -> Decision:
        requests, reserved = window.requests, window.tokens
        return Decision(
            allowed=reason is None,
            quota=quota,
            requests_remaining=max(0, quota.requests_per_minute - requests.total),
            requests_reset=max(0.0, requests.reset(now, self._window)),
            tokens_remaining=max(0, quota.tokens_per_minute - reserved.total),
            tokens_reset=max(0.0, reserved.reset(now, self._window)),
            reason="requests" if reason == "requests" else "tokens" if reason else None,
            retry_after=max(wait, 0.0) if wait is not None else None,
            second=second,
        )

    def _maybe_sweep(self, second: int) -> None:
        """Drop windows of keys that have been idle for a whole window."""
        self._calls += 1
        if self._calls % SWEEP_EVERY:
            return
        oldest = second - self._window
        for key in list(self._windows):
            window = self._windows[key]
            window.requests.slide(oldest)
            window.tokens.slide(oldest)
            if not window.requests.counts and not window.tokens.counts:
                del self._windows[key]
