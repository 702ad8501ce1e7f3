"""Exact sliding-window limits kept in this process (one replica, or Redis unreachable).

Each key keeps the admission times of the last minute (requests) and the token amounts
reserved in it; a request is admitted when both windows have room for it. The clock is
injected so tests can move time without sleeping.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nexus.limits.decision import WINDOW_SECONDS, Decision, Quota

Clock = Callable[[], float]
SWEEP_EVERY = 10_000
DRAIN = 256  # expired reservations dropped per call at most (``_Window.expire``)


@dataclass(slots=True)
class _TokenEntry:
    at: float
    tokens: int


@dataclass(slots=True)
class _Window:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[str, _TokenEntry]] = field(default_factory=deque)
    by_member: dict[str, _TokenEntry] = field(default_factory=dict)
    token_total: int = 0

    def expire(self, horizon: float, *, drain: int | None = DRAIN) -> None:
        """Drop admissions that left the window; reservations at most ``drain`` a call.

        As in Redis (``acquire.lua``): after a burst, the first calls of the next minute
        must not each pay for the whole burst. Reservations still waiting stay in
        ``token_total`` until drained; a call they would refuse drains them all first.
        """
        while self.requests and self.requests[0] <= horizon:
            self.requests.popleft()
        left = drain
        while self.tokens and self.tokens[0][1].at <= horizon and left != 0:
            member, entry = self.tokens.popleft()
            self.token_total -= entry.tokens
            self.by_member.pop(member, None)
            if left is not None:
                left -= 1

    def first_reservation_after(self, horizon: float) -> float | None:
        """When the oldest reservation still inside the window was made (``None``: none);
        reservations waiting to be drained are older and skipped, as Redis does."""
        tokens = self.tokens
        if not tokens or tokens[0][1].at > horizon:
            return tokens[0][1].at if tokens else None
        i = bisect.bisect_right(tokens, horizon, key=lambda item: item[1].at)
        return tokens[i][1].at if i < len(tokens) else None

    def empty(self) -> bool:
        return not self.requests and not self.tokens


class InProcessWindow:
    """Sliding-window request and token limits for the keys seen by this process."""

    def __init__(self, *, clock: Clock = time.monotonic, window: float = WINDOW_SECONDS) -> None:
        self._clock = clock
        self._window = window
        self._windows: dict[str, _Window] = {}
        self._calls = 0

    async def acquire(self, key: str, quota: Quota, tokens: int, member: str) -> Decision:
        return self.acquire_now(key, quota, tokens, member)

    def acquire_now(self, key: str, quota: Quota, tokens: int, member: str) -> Decision:
        now = self._clock()
        self._maybe_sweep(now)
        window = self._windows.setdefault(key, _Window())
        window.expire(now - self._window)
        rpm, tpm = quota.requests_per_minute, quota.tokens_per_minute
        count = len(window.requests)
        if rpm and count >= rpm and quota.count_request:
            wait = window.requests[0] + self._window - now
            return self._decision(window, quota, now, False, "requests", wait)
        if tpm and window.token_total + tokens > tpm:
            window.expire(now - self._window, drain=None)  # never refuse for expired tokens
        if tpm and window.token_total + tokens > tpm:
            wait = self._tokens_free_after(window, tokens, tpm, now)
            return self._decision(window, quota, now, False, "tokens", wait)
        if quota.count_request:
            window.requests.append(now)
        if tokens:
            entry = _TokenEntry(now, tokens)
            window.tokens.append((member, entry))
            window.by_member[member] = entry
            window.token_total += tokens
        return self._decision(window, quota, now, True, None, None)

    async def settle(self, key: str, member: str, reserved: int, actual: int) -> None:
        window = self._windows.get(key)
        entry = window.by_member.get(member) if window else None
        if window is None or entry is None:
            return  # already slid out of the window: nothing left to correct
        window.token_total += actual - entry.tokens
        entry.tokens = actual

    def _tokens_free_after(self, window: _Window, needed: int, limit: int, now: float) -> float:
        """Seconds until enough reserved tokens leave the window for ``needed`` to fit."""
        if needed > limit:
            return self._window
        excess = window.token_total + needed - limit
        for _, entry in window.tokens:
            excess -= entry.tokens
            if excess <= 0:
                return entry.at + self._window - now
        return self._window

    def _decision(
        self,
        window: _Window,
        quota: Quota,
        now: float,
        allowed: bool,
        reason: str | None,
        wait: float | None,
    ) -> Decision:
        oldest_request = window.requests[0] if window.requests else now
        first = window.first_reservation_after(now - self._window)
        oldest_tokens = now if first is None else first
        return Decision(
            allowed=allowed,
            quota=quota,
            requests_remaining=max(0, quota.requests_per_minute - len(window.requests)),
            requests_reset=max(0.0, oldest_request + self._window - now),
            tokens_remaining=max(0, quota.tokens_per_minute - window.token_total),
            tokens_reset=max(0.0, oldest_tokens + self._window - now),
            reason="requests" if reason == "requests" else "tokens" if reason else None,
            retry_after=max(wait, 0.0) if wait is not None else None,
        )

    def _maybe_sweep(self, now: float) -> None:
        """Drop windows of keys that have been idle for a whole minute."""
        self._calls += 1
        if self._calls % SWEEP_EVERY:
            return
        horizon = now - self._window
        for key in list(self._windows):
            window = self._windows[key]
            window.expire(horizon, drain=None)
            if window.empty():
                del self._windows[key]
