"""Sliding-window limits in Redis: one atomic Lua script per request, exact across replicas.

Each key keeps one counter per second with traffic in it (``acquire.lua``): at most 61
per window and hash whatever the rate, 1,552 bytes for a key with traffic in every
second of its window (``bench/limiter_redis.py``, ``docs/redis.md``). An admission counts
for 60 to 61 seconds, so the limit of N a minute holds exactly (no 60 seconds ever admit
more than N) and a call is refused only when the last 61 seconds hold N; headers and
Retry-After are at most one second later than an exact sliding window's (tested in
``tests/unit/test_sliding_window.py`` and ``tests/limits/test_redis_window.py``). The two
keys of one principal and model share a hash tag (``{...}``), so the script touches one
slot of a Redis Cluster.

Settling a reservation with the real usage does not cost a round trip of its own: it is
queued and travels with the next ``acquire`` of the same key, or after ``SETTLE_DELAY``
seconds with a batch for that key when no request came. Until then the window holds the
(larger) reservation, which can only make the limit stricter, never looser.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from importlib import resources
from typing import Any, cast

from nexus.limits.connect import connect
from nexus.limits.decision import WINDOW_SECONDS, Decision, Quota
from nexus.limits.resp import Redis, RedisReplyError, RedisUnavailable, Script

SETTLE_DELAY = 1.0


def _script(name: str) -> str:
    return resources.files("nexus.limits").joinpath(name).read_text()


class RedisWindow:
    """The Redis-backed limiter backend; raises ``RedisUnavailable``/``RedisReplyError``."""

    def __init__(
        self,
        client: Redis,
        *,
        window: int = WINDOW_SECONDS,
        settle_delay: float = SETTLE_DELAY,
    ) -> None:
        self._client = client
        self._settle_delay = settle_delay
        self._window = window
        self._acquire = Script(client, _script("acquire.lua"))
        self._settle = Script(client, _script("settle.lua"))
        # key -> settlements not sent yet, flattened as (second, actual - reserved) pairs
        self._pending: dict[str, list[int]] = {}
        # key -> monotonic time its oldest queued settlement was queued
        self._since: dict[str, float] = {}
        # key -> its one flush timer: a timer per settle cost more than the settle itself
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    @classmethod
    def from_url(
        cls, url: str, *, tls: ssl.SSLContext | None = None, settle_delay: float = SETTLE_DELAY
    ) -> RedisWindow:
        """A backend on ``redis[s]://``, ``redis[s]+cluster://`` or ``redis[s]+sentinel://``
        (``connect``), ``tls`` verifying the ``rediss`` forms."""
        return cls(connect(url, tls=tls), settle_delay=settle_delay)

    @staticmethod
    def keys(key: str) -> list[str]:
        """The window's Redis keys, requests then tokens, in one hash slot (``{key}``)."""
        base = f"nexus:rl:{{{key}}}"
        return [f"{base}:req", f"{base}:tok"]

    async def acquire(self, key: str, quota: Quota, tokens: int) -> Decision:
        rpm, tpm = quota.requests_per_minute, quota.tokens_per_minute
        sent_rpm = rpm if quota.count_request else -1
        args: list[int] = [self._window, sent_rpm, tpm, tokens if tpm else 0]
        settlements = self._pending.pop(key, None)
        if settlements:
            args += settlements
            since = self._since.pop(key)
        try:
            raw = cast(list[Any], await self._acquire(keys=self.keys(key), args=args))
        except (RedisUnavailable, RedisReplyError):
            if settlements:  # not applied: keep them for the next attempt
                self._queue(key, since).extend(settlements)
            raise
        allowed, reason, req_left, req_reset, tok_left, tok_reset, retry, second = (
            int(v) for v in raw
        )
        if not quota.count_request:
            req_left += rpm - sent_rpm  # the script answered -1 - count
        return Decision(
            allowed=bool(allowed),
            quota=quota,
            requests_remaining=max(0, req_left),
            requests_reset=max(0, req_reset) / 1000,
            tokens_remaining=max(0, tok_left),
            tokens_reset=max(0, tok_reset) / 1000,
            reason="requests" if reason == 1 else "tokens" if reason == 2 else None,
            retry_after=max(0, retry) / 1000 if retry >= 0 else None,
            second=second,
        )

    async def settle(self, key: str, second: int, reserved: int, actual: int) -> None:
        """Queue the correction; it rides on the key's next acquire or a delayed flush."""
        pending = self._pending.get(key)
        if pending is None:
            pending = self._queue(key, time.monotonic())
        pending += [second, actual - reserved]

    def _queue(self, key: str, since: float) -> list[int]:
        """The key's settlement queue, with its timer armed if none is."""
        pending = self._pending.setdefault(key, [])
        self._since[key] = min(since, self._since.get(key, since))
        if key not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[key] = loop.call_later(self._settle_delay, self._due, key, loop)
        return pending

    def _due(self, key: str, loop: asyncio.AbstractEventLoop) -> None:
        """Flush the key's queue once its oldest settlement has waited ``settle_delay``.

        Under steady traffic each acquire takes the queue along, so the timer only moves
        on to the current oldest settlement instead of a Redis call per request.
        """
        del self._timers[key]
        since = self._since.get(key)
        if since is None:
            return
        wait = since + self._settle_delay - time.monotonic()
        if wait > 0:
            self._timers[key] = loop.call_later(wait, self._due, key, loop)
            return
        task = loop.create_task(self.flush(key))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def flush(self, key: str) -> None:
        """Send the key's queued settlements now (none were picked up by an acquire)."""
        settlements = self._pending.pop(key, None)
        self._since.pop(key, None)
        if not settlements:
            return
        try:
            await self._settle(keys=self.keys(key)[1:], args=[self._window, *settlements])
        except (RedisUnavailable, RedisReplyError):
            # Redis is away; the reservations stay (stricter) until they leave the window.
            return

    async def flush_all(self) -> None:
        for key in list(self._pending):
            await self.flush(key)

    async def close(self) -> None:
        await self.flush_all()
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in list(self._flushes):
            task.cancel()
        await asyncio.gather(*self._flushes, return_exceptions=True)
        await self._client.close()
