"""A spent limit through a graph: the transformer's ``Retry-After`` and ``x-ratelimit-*`` reach
the client (issue 11), through a real router, transformer, redis-server and model server.

KServe's router drops a step's headers, so the ``openai`` client got a 429 without
``Retry-After`` and retried on its own schedule.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, RateLimitError

from tests.router.conftest import RouterFactory, sequence
from tests.support.servers import Redis, Upstream, transformer
from tests.transformer.conftest import BASE_ENV, KEY, chat


@pytest.mark.parametrize("policy", ["client", "kserve"])
async def test_a_429_carries_retry_after_and_limit_headers_through_the_graph(
    policy: str, tmp_path: Path, redis: Redis, upstream: Upstream, start_router: RouterFactory
) -> None:
    env = {**BASE_ENV, "GATEWAY_REDIS_URL": redis.url, "GATEWAY_RATE_LIMIT_PER_MINUTE": "1"}
    with transformer(tmp_path, model="chat", predictor_host=upstream.host, env=env) as gw:
        spec = sequence(
            {"name": "primary", "serviceUrl": f"{gw.url}/v1/chat/completions"},
            {"name": "fallback", "serviceUrl": f"{gw.url}/v1/chat/completions",
             "condition": "error.upstream_failure"},
        )  # fmt: skip
        router = start_router(
            spec, args=["--status-policy", policy], env={"PROPAGATE_HEADERS": "^Authorization$"}
        )
        auth = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(timeout=30) as http:
            first = await http.post(router.url, json=chat(), headers=auth)
            assert first.status_code == 200
            assert "x-ratelimit-remaining-requests" not in first.headers  # a 2xx: as before
            refused = await http.post(router.url, json=chat(), headers=auth)
        if policy == "kserve":
            # KServe's status 200 for a Sequence stopped by its condition: no Retry-After on it.
            assert refused.status_code == 200
            assert "retry-after" not in refused.headers
            return
        assert refused.status_code == 429
        # One-second buckets: up to a second later than an exact window (docs/redis.md).
        assert 1 <= int(refused.headers["retry-after"]) <= 61
        assert refused.headers["x-ratelimit-limit-requests"] == "1"
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        openai = AsyncOpenAI(base_url=router.url + "/openai/v1", api_key=KEY, max_retries=0)
        async with openai:
            with pytest.raises(RateLimitError) as caught:
                await openai.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": "hi"}]
                )
        # The same window, asked again a moment later: the same wait, or a second less when a
        # second boundary passed in between (a loaded CI machine crossed one: 60, then 59).
        first, later = (int(r.headers["retry-after"]) for r in (refused, caught.value.response))
        assert first - 1 <= later <= first
