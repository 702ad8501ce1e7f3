"""Request windows are keyed by the InferenceService, and a fallback is one request (item 4).

Real transformers sharing a real redis-server, as two ISVCs behind one public name do.
The router is played by the test: it retries on the second transformer with the
``x-nexus-fallback`` header when the first answers an upstream failure.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.processes import free_port
from tests.support.servers import Redis, Upstream, transformer
from tests.transformer.conftest import BASE_ENV, chat

LIMIT = 5
FIVE = "test-key-five-a-minute"
AUTH = {"Authorization": f"Bearer {FIVE}"}


def _env(redis: Redis, aliases: str) -> dict[str, str]:
    policies = {FIVE: {"rate_limit_per_minute": LIMIT}}
    return {**BASE_ENV, "GATEWAY_REDIS_URL": redis.url, "GATEWAY_MODEL_ALIASES": aliases,
            "GATEWAY_API_KEYS": f"{BASE_ENV['GATEWAY_API_KEYS']},{FIVE}",
            "GATEWAY_CIRCUIT_BREAKER_MAX_FAILURES": "1000",
            "GATEWAY_API_KEY_POLICIES": orjson.dumps(policies).decode()}  # fmt: skip


@pytest.mark.usefixtures("healthy")
def test_aliases_of_one_predictor_share_one_window(
    tmp_path: Path, redis: Redis, healthy: Upstream
) -> None:
    env = _env(redis, "chat-alias,primary")
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=env) as gw:
        url = f"{gw.url}/v1/chat/completions"
        names = ["chat", "chat-alias", "primary"]
        statuses = [httpx.post(url, json=chat(names[i % 3]), headers=AUTH).status_code
                    for i in range(3 * LIMIT)]  # fmt: skip
        # Before: 5 per public name, 15 in all.
        assert statuses == [200] * LIMIT + [429] * (2 * LIMIT)
        v1 = httpx.post(f"{gw.url}/v1/models/chat-alias:predict", json={"instances": [1]},
                        headers=AUTH)  # fmt: skip
        assert v1.status_code == 429


@pytest.mark.usefixtures("healthy")
def test_a_fallback_is_one_request_for_the_caller(
    tmp_path: Path, redis: Redis, healthy: Upstream
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    env = _env(redis, "chat")
    with (
        transformer(tmp_path, model="llama-8b", predictor_host=dead, env=env) as llama,
        transformer(tmp_path, model="qwen-1-5b", predictor_host=healthy.host,
                    env={**env, "GATEWAY_UPSTREAM_MODEL_NAME": "chat"}) as qwen,
    ):  # fmt: skip
        served = 0
        for _ in range(LIMIT):
            first = httpx.post(f"{llama.url}/v1/chat/completions", json=chat(), headers=AUTH)
            assert first.status_code in (502, 503), first.text
            assert first.json()["error"]["upstream_failure"] is True
            retry = httpx.post(f"{qwen.url}/v1/chat/completions", json=chat(),
                               headers={**AUTH, "X-Nexus-Fallback": "llama-8b"})  # fmt: skip
            served += retry.status_code == 200
        # Before: both transformers charged the caller's `chat` window, and the third
        # pair was refused.
        assert served == LIMIT
        # The caller's five requests are spent on the ISVC they first reached...
        sixth = httpx.post(f"{llama.url}/v1/chat/completions", json=chat(), headers=AUTH)
        assert sixth.status_code == 429
        # ...and the fallbacks took nothing from qwen-1-5b's own window.
        direct = [httpx.post(f"{qwen.url}/v1/chat/completions", json=chat(),
                             headers=AUTH).status_code for _ in range(LIMIT + 1)]  # fmt: skip
        assert direct == [200] * LIMIT + [429]
