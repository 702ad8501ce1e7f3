"""Token estimates count tools, response formats and media parts (issue 12, item 6).

Twenty concurrent chats, each with a small text prompt but a large prompt-side field,
against a real transformer whose key allows 2,000 tokens a minute. The predictor is slowed
so that all twenty are in flight together: only the estimate can hold them back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.servers import Transformer, Upstream, transformer
from tests.transformer.conftest import BASE_ENV, HEALTHY, set_faults

BUDGET = 2000
CASES: dict[str, dict[str, Any]] = {
    "tools": {
        "tools": [{"type": "function", "function": {
            "name": f"tool_{i}", "description": "d" * 600,
            "parameters": {"type": "object", "properties": {}}}} for i in range(6)],
    },
    "response_format": {
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "schema": {"type": "object", "description": "s" * 4000}}},
    },
    "media_part": {
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}],
    },
}  # fmt: skip
KEYS = {name: f"test-key-estimate-{name}" for name in CASES}


@pytest.fixture(scope="module")
def estimate_gateway(module_tmp: Path, llm: Upstream) -> Iterator[Transformer]:
    policies = {key: {"tokens_per_minute": BUDGET, "rate_limit_per_minute": 10_000}
                for key in KEYS.values()}  # fmt: skip
    env = {**BASE_ENV, "GATEWAY_MAX_BODY_BYTES": str(1 << 20),
           "GATEWAY_API_KEYS": ",".join([BASE_ENV["GATEWAY_API_KEYS"], *KEYS.values()]),
           "GATEWAY_API_KEY_POLICIES": orjson.dumps(policies).decode()}  # fmt: skip
    (module_tmp / "estimates").mkdir(exist_ok=True)
    with transformer(module_tmp / "estimates", model="chat", predictor_host=llm.host,
                     env=env) as gw:  # fmt: skip
        yield gw


@pytest.mark.parametrize("case", sorted(CASES))
def test_concurrent_requests_are_held_by_what_the_prompt_really_carries(
    estimate_gateway: Transformer, healthy: Upstream, case: str
) -> None:
    set_faults(healthy, **{**HEALTHY, "token_latency_ms": 150})
    body = {"model": "chat", "max_tokens": 4,
            "messages": [{"role": "user", "content": "hi"}], **CASES[case]}  # fmt: skip
    auth = {"Authorization": f"Bearer {KEYS[case]}"}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=estimate_gateway.url, timeout=30) as client:
            calls = [client.post("/v1/chat/completions", json=body, headers=auth)
                     for _ in range(20)]  # fmt: skip
            return [r.status_code for r in await asyncio.gather(*calls)]

    statuses = asyncio.run(burst())
    served = statuses.count(200)
    assert statuses.count(429) == 20 - served, statuses
    # Each request carries at least ~576 tokens of prompt; before, each was estimated at
    # 2 + max_tokens and all twenty were admitted.
    assert 1 <= served <= BUDGET // 576, statuses
