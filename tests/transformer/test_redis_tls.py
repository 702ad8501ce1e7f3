"""The transformer process on a TLS-only Redis with a password and a private CA, configured
as on Kubernetes: ``GATEWAY_REDIS_URL=rediss://...`` and the CA's PEM in
``GATEWAY_REDIS_CA_PEM`` (the rendered transformer reads env only; ``tests/limits/test_tls.py``
gives it as ``GATEWAY_REDIS_CA_FILE``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_sync

from tests.support.certs import Authority, Issued
from tests.support.servers import Redis, Upstream, redis_server, transformer
from tests.transformer.conftest import BASE_ENV, KEY, chat, metric

AUTH = {"Authorization": f"Bearer {KEY}"}
PASSWORD = "tls-test-password"


@pytest.fixture(scope="module")
def server_cert(tmp_path_factory: pytest.TempPathFactory) -> Issued:
    return Authority(tmp_path_factory.mktemp("ca")).issue("redis")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, server_cert: Issued) -> Iterator[Redis]:
    with redis_server(
        tmp_path_factory.mktemp("redis"), tls=server_cert, plaintext=False,
        extra_args=("--requirepass", PASSWORD),
    ) as server:  # fmt: skip
        yield server


def url(redis: Redis) -> str:
    return f"rediss://:{PASSWORD}@127.0.0.1:{redis.tls_port}/0"


@pytest.mark.usefixtures("healthy")
def test_limits_are_kept_in_a_tls_redis(
    tmp_path: Path, tls_redis: Redis, server_cert: Issued, healthy: Upstream
) -> None:
    env = {**BASE_ENV, "GATEWAY_REDIS_URL": url(tls_redis), "GATEWAY_RATE_LIMIT_PER_MINUTE": "5",
           "GATEWAY_REDIS_CA_PEM": server_cert.ca_file.read_text()}  # fmt: skip
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=env) as gw:
        endpoint = f"{gw.url}/v1/chat/completions"
        statuses = [httpx.post(endpoint, json=chat(), headers=AUTH).status_code for _ in range(8)]
        assert statuses == [200] * 5 + [429] * 3
        # Kept in Redis, not in the process' fallback window (which would also admit 5).
        assert metric(gw, "nexus_transformer_limiter_degraded") == 0
        assert metric(gw, "nexus_transformer_limiter_degraded_requests_total") == 0
    with redis_sync.Redis(port=tls_redis.tls_port, password=PASSWORD, ssl=True,
                          ssl_ca_certs=str(server_cert.ca_file)) as inspector:  # fmt: skip
        assert inspector.keys("nexus:rl:*")


@pytest.mark.usefixtures("healthy")
def test_without_the_ca_the_failure_mode_applies_and_the_log_says_why(
    tmp_path: Path, tls_redis: Redis, healthy: Upstream
) -> None:
    env = {**BASE_ENV, "GATEWAY_REDIS_URL": url(tls_redis),
           "GATEWAY_RATE_LIMIT_FAILURE_MODE": "closed"}  # fmt: skip
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=env) as gw:
        refused = httpx.post(f"{gw.url}/v1/chat/completions", json=chat(), headers=AUTH)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "rate_limiter_unavailable"
        deadline = time.monotonic() + 5
        while "TLS certificate verification failed" not in gw.process.output():
            assert time.monotonic() < deadline, gw.process.output()[-2000:]
            time.sleep(0.05)
