"""Rate limits per principal and model: requests and tokens per minute, sliding windows
of one-second buckets (``redis_backend`` states their precision).

``RateLimiter`` is the one front the transformer talks to. With a Redis URL it keeps the
windows in Redis (exact across replicas); without one, in this process (one replica
only). While Redis is unreachable it follows the failure mode: ``open`` keeps serving
under a per-replica window and reports itself degraded, ``closed`` answers 503. It
tries Redis again at most once per ``REDIS_RETRY_SECONDS``, so an outage costs requests
no connect timeouts, and it recovers by itself when Redis is back.

An outage is logged once when it starts and once when Redis has answered for
``RECOVERED_SECONDS`` without a failure: during a Cluster failover only the dead master's
keys fail, so calls would otherwise flap between the two states (and log lines) until
its replica is promoted (``tests/limits/test_failover.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from nexus.config import FailureMode
from nexus.errors import LimiterUnavailable
from nexus.limits.decision import Backend, Decision, Quota, Reservation
from nexus.limits.redis_backend import RedisWindow
from nexus.limits.resp import RedisReplyError, RedisUnavailable
from nexus.limits.sliding_window import InProcessWindow

__all__ = ["Decision", "InProcessWindow", "Quota", "RateLimiter", "RedisWindow", "Reservation"]

REDIS_RETRY_SECONDS = 1.0
RECOVERED_SECONDS = 5.0
log = logging.getLogger("nexus.limits")


class LimiterEvents(Protocol):
    """What the limiter reports to metrics; kept abstract so policies never import servers."""

    def degraded(self, active: bool) -> None: ...

    def served_degraded(self) -> None: ...


class RateLimiter:
    """Admits or refuses requests and settles token reservations after the call."""

    def __init__(
        self,
        *,
        redis: RedisWindow | None,
        local: InProcessWindow,
        failure_mode: FailureMode,
        events: LimiterEvents,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._local = local
        self._failure_mode = failure_mode
        self._events = events
        self._clock = clock
        self._redis_down_until: float | None = None
        # When the outage being logged began, and since when Redis has answered again.
        self._outage_since: float | None = None
        self._answering_since: float | None = None

    @property
    def degraded(self) -> bool:
        return self._redis_down_until is not None

    async def acquire(
        self, key: str, quota: Quota, tokens: int
    ) -> tuple[Decision, Reservation | None]:
        backend: Backend = self._local
        if self._redis is not None and self._redis_usable():
            try:
                decision = await self._redis.acquire(key, quota, tokens)
            except (RedisUnavailable, RedisReplyError) as exc:
                self._mark_down(exc)
            else:
                if self._outage_since is not None:
                    self._mark_up()
                return decision, self._reservation(decision, key, tokens, self._redis)
        if self._redis is not None:
            if self._failure_mode == "closed":
                raise LimiterUnavailable("rate limiter unavailable: Redis is unreachable")
            self._events.served_degraded()
        decision = await backend.acquire(key, quota, tokens)
        return decision, self._reservation(decision, key, tokens, backend)

    async def settle(self, reservation: Reservation, actual_tokens: int) -> None:
        """Replace the reserved tokens by the real usage; a lost settle only over-counts."""
        if reservation.settled:
            return
        reservation.settled = True
        if actual_tokens == reservation.tokens:
            return
        try:
            await reservation.backend.settle(
                reservation.key, reservation.second, reservation.tokens, actual_tokens
            )
        except (RedisUnavailable, RedisReplyError) as exc:
            self._mark_down(exc)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.close()

    @staticmethod
    def _reservation(
        decision: Decision, key: str, tokens: int, backend: Backend
    ) -> Reservation | None:
        if not decision.allowed or not tokens or not decision.quota.tokens_per_minute:
            return None
        return Reservation(key=key, second=decision.second, tokens=tokens, backend=backend)

    def _redis_usable(self) -> bool:
        return self._redis_down_until is None or self._clock() >= self._redis_down_until

    def _mark_down(self, exc: BaseException) -> None:
        now = self._clock()
        if self._outage_since is None:
            log.warning(
                "Redis unreachable, rate limits fall back to mode %r: %s", self._failure_mode, exc
            )
            self._outage_since = now
        if self._redis_down_until is None:
            self._events.degraded(True)
        self._redis_down_until = now + REDIS_RETRY_SECONDS
        self._answering_since = None

    def _mark_up(self) -> None:
        now = self._clock()
        if self._redis_down_until is not None:
            self._events.degraded(False)
            self._redis_down_until = None
            self._answering_since = now
        since, answering = self._outage_since, self._answering_since
        if since is not None and answering is not None and now - answering >= RECOVERED_SECONDS:
            log.warning(
                "Redis reachable again, shared rate limits restored after %.1f s", answering - since
            )
            self._outage_since = self._answering_since = None
