"""Sliding-window limits in Redis: one atomic Lua script per request, exact across replicas.

The request window is a sorted set of admission times; the token window is a sorted set
of reservations plus a running total, so checking a budget costs O(expired entries)
rather than a sum over the whole minute. Keys share a hash tag (``{...}``) so the
script also runs on Redis Cluster.
"""

from __future__ import annotations

from importlib import resources
from typing import Any, cast

import redis.asyncio as aioredis

from nexus.limits.decision import WINDOW_SECONDS, Decision, Quota

CONNECT_TIMEOUT_SECONDS = 0.25
COMMAND_TIMEOUT_SECONDS = 0.5


def _script(name: str) -> str:
    return resources.files("nexus.limits").joinpath(name).read_text()


class RedisWindow:
    """The Redis-backed limiter backend; raises redis/OS errors for the caller to judge."""

    def __init__(self, client: aioredis.Redis, *, window: float = WINDOW_SECONDS) -> None:
        self._client = client
        self._window_ms = int(window * 1000)
        self._acquire = client.register_script(_script("acquire.lua"))
        self._settle = client.register_script(_script("settle.lua"))

    @classmethod
    def from_url(cls, url: str) -> RedisWindow:
        client = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
            retry_on_timeout=False,
        )
        return cls(client)

    @staticmethod
    def _keys(key: str) -> list[str]:
        base = f"nexus:rl:{{{key}}}"
        return [f"{base}:req", f"{base}:tok", f"{base}:toktotal"]

    async def acquire(self, key: str, quota: Quota, tokens: int, member: str) -> Decision:
        rpm, tpm = quota.requests_per_minute, quota.tokens_per_minute
        args: list[str | int] = [self._window_ms, rpm, tpm, tokens if tpm else 0, member]
        raw = cast(list[Any], await self._acquire(keys=self._keys(key), args=args))
        allowed, reason, req_left, req_reset, tok_left, tok_reset, retry = (int(v) for v in raw)
        return Decision(
            allowed=bool(allowed),
            quota=quota,
            requests_remaining=max(0, req_left),
            requests_reset=max(0, req_reset) / 1000,
            tokens_remaining=max(0, tok_left),
            tokens_reset=max(0, tok_reset) / 1000,
            reason="requests" if reason == 1 else "tokens" if reason == 2 else None,
            retry_after=max(0, retry) / 1000 if retry >= 0 else None,
        )

    async def settle(self, key: str, member: str, reserved: int, actual: int) -> None:
        _, token_log, token_total = self._keys(key)
        args: list[str | int] = [
            f"{member}|{reserved}",
            f"{member}|{actual}",
            actual - reserved,
            self._window_ms,
        ]
        await self._settle(keys=[token_log, token_total], args=args)

    async def ping(self) -> bool:
        return bool(await self._client.ping())

    async def close(self) -> None:
        await self._client.aclose()
