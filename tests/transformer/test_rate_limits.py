"""Rate limits shared through a real Redis: exact across replicas, and Redis outages."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from tests.support.servers import (
    Redis,
    Upstream,
    redis_server,
    transformer,
    transformers,
)
from tests.transformer.conftest import BASE_ENV, KEY, chat, metric

AUTH = {"Authorization": f"Bearer {KEY}"}
LIMIT = 50


@pytest.mark.usefixtures("healthy")
def test_exact_limit_across_four_replicas_and_64_clients(
    tmp_path: Path, redis: Redis, healthy: Upstream
) -> None:
    env = {**BASE_ENV, "GATEWAY_REDIS_URL": redis.url, "GATEWAY_RATE_LIMIT_PER_MINUTE": str(LIMIT)}
    with transformers(tmp_path, 4, model="chat", predictor_host=healthy.host, env=env) as replicas:

        async def flood() -> Counter[int]:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                gate = asyncio.Semaphore(64)

                async def one(i: int) -> int:
                    async with gate:
                        url = f"{replicas[i % 4].url}/v1/chat/completions"
                        return (await client.post(url, json=chat(), headers=AUTH)).status_code

                return Counter(await asyncio.gather(*(one(i) for i in range(4 * LIMIT))))

        statuses = asyncio.run(flood())
        assert statuses == Counter({200: LIMIT, 429: 3 * LIMIT})
        refused = httpx.post(f"{replicas[0].url}/v1/chat/completions", json=chat(), headers=AUTH)
        assert refused.status_code == 429
        assert refused.json()["error"]["type"] == "rate_limit_error"
        # One-second buckets: up to a second later than an exact window (docs/redis.md).
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert metric(replicas[0], "nexus_transformer_rate_limited_total") >= 1


def restart(redis: Redis, tmp_path: Path):  # type: ignore[no-untyped-def]
    return redis_server(tmp_path / "redis-again", port=redis.port)


@pytest.mark.usefixtures("healthy")
def test_open_mode_keeps_serving_while_redis_is_down_then_recovers(
    tmp_path: Path, redis: Redis, healthy: Upstream
) -> None:
    env = {**BASE_ENV, "GATEWAY_REDIS_URL": redis.url, "GATEWAY_RATE_LIMIT_PER_MINUTE": "1000"}
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=env) as gw:
        url = f"{gw.url}/v1/chat/completions"
        assert httpx.post(url, json=chat(), headers=AUTH).status_code == 200
        redis.process.kill()
        redis.process.proc.wait()
        for _ in range(5):
            assert httpx.post(url, json=chat(), headers=AUTH).status_code == 200
        assert metric(gw, "nexus_transformer_limiter_degraded") == 1
        assert metric(gw, "nexus_transformer_limiter_degraded_requests_total") >= 5
        with restart(redis, tmp_path):
            deadline = time.monotonic() + 10
            while (
                metric(gw, "nexus_transformer_limiter_degraded") == 1
                and time.monotonic() < deadline
            ):
                assert httpx.post(url, json=chat(), headers=AUTH).status_code == 200
                time.sleep(0.2)
            assert metric(gw, "nexus_transformer_limiter_degraded") == 0
            # Shared state is written again: the fresh Redis holds this principal's window.
            keys = redis_sync.Redis(port=redis.port).keys("nexus:rl:*")
            assert keys


@pytest.mark.usefixtures("healthy")
def test_closed_mode_refuses_while_redis_is_down_then_recovers(
    tmp_path: Path, redis: Redis, healthy: Upstream
) -> None:
    env = {**BASE_ENV, "GATEWAY_REDIS_URL": redis.url, "GATEWAY_RATE_LIMIT_FAILURE_MODE": "closed"}
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=env) as gw:
        url = f"{gw.url}/v1/chat/completions"
        assert httpx.post(url, json=chat(), headers=AUTH).status_code == 200
        redis.process.kill()
        redis.process.proc.wait()
        refused = httpx.post(url, json=chat(), headers=AUTH)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "rate_limiter_unavailable"
        assert "upstream_failure" not in refused.json()["error"]
        with restart(redis, tmp_path):
            deadline = time.monotonic() + 10
            status = 503
            while status != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
                status = httpx.post(url, json=chat(), headers=AUTH).status_code
            assert status == 200
