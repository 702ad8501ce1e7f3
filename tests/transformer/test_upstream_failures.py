"""Predictor failures: refused, timed out, 5xx, and the circuit breaker around them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port
from tests.support.servers import Transformer, Upstream, transformer
from tests.transformer.conftest import BASE_ENV, KEY, chat, metric, set_faults, upstream_stats

AUTH = {"Authorization": f"Bearer {KEY}"}
RESET_SECONDS = 1.0


def test_refused_connection_is_502_with_marker(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with transformer(tmp_path, model="chat", predictor_host=dead, env=BASE_ENV) as gw:
        response = httpx.post(f"{gw.url}/v1/chat/completions", json=chat(), headers=AUTH)
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert error["upstream_failure"] is True


def test_timeout_is_504_with_marker(tmp_path: Path, healthy: Upstream) -> None:
    env = {**BASE_ENV, "GATEWAY_REQUEST_TIMEOUT_SECONDS": "0.5"}
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=env) as gw:
        set_faults(healthy, hang=True)
        started = time.monotonic()
        response = httpx.post(
            f"{gw.url}/v1/chat/completions", json=chat(), headers=AUTH, timeout=30
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["upstream_failure"] is True
    assert elapsed < 5


@pytest.fixture
def breaker_gateway(tmp_path: Path, healthy: Upstream) -> Iterator[Transformer]:
    env = {
        **BASE_ENV,
        "GATEWAY_CIRCUIT_BREAKER_MAX_FAILURES": "3",
        "GATEWAY_CIRCUIT_BREAKER_RESET_SECONDS": str(RESET_SECONDS),
    }
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=env) as gw:
        yield gw


def open_circuit(gw: Transformer, upstream: Upstream) -> None:
    set_faults(upstream, error_ratio=1.0, error_status=500)
    for _ in range(3):
        response = httpx.post(f"{gw.url}/v1/chat/completions", json=chat(), headers=AUTH)
        assert response.status_code == 502
    before = upstream_stats(upstream)["requests"]
    refused = httpx.post(f"{gw.url}/v1/chat/completions", json=chat(), headers=AUTH)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "circuit_open"
    assert refused.json()["error"]["upstream_failure"] is True
    assert int(refused.headers["retry-after"]) >= 1
    assert upstream_stats(upstream)["requests"] == before, "an open circuit must not call upstream"


def circuit_state(gw: Transformer) -> float:
    return metric(gw, "nexus_transformer_circuit_state")


def test_breaker_opens_then_a_good_probe_closes_it(
    breaker_gateway: Transformer, healthy: Upstream
) -> None:
    open_circuit(breaker_gateway, healthy)
    assert circuit_state(breaker_gateway) == 2
    set_faults(healthy, error_ratio=0.0)
    time.sleep(RESET_SECONDS)  # the reset period is wall-clock time in a real process
    response = httpx.post(f"{breaker_gateway.url}/v1/chat/completions", json=chat(), headers=AUTH)
    assert response.status_code == 200
    assert circuit_state(breaker_gateway) == 0
    assert (
        'nexus_transformer_circuit_open_total{upstream="'
        in httpx.get(f"{breaker_gateway.url}/metrics").text
    )


def test_failed_probe_reopens(breaker_gateway: Transformer, healthy: Upstream) -> None:
    open_circuit(breaker_gateway, healthy)
    time.sleep(RESET_SECONDS)
    probe = httpx.post(f"{breaker_gateway.url}/v1/chat/completions", json=chat(), headers=AUTH)
    assert probe.status_code == 502
    again = httpx.post(f"{breaker_gateway.url}/v1/chat/completions", json=chat(), headers=AUTH)
    assert again.json()["error"]["code"] == "circuit_open"


def test_half_open_admits_exactly_one_of_concurrent_probes(
    breaker_gateway: Transformer, healthy: Upstream
) -> None:
    open_circuit(breaker_gateway, healthy)
    # The probe will succeed, slowly, so the other callers arrive while it is in flight.
    set_faults(healthy, error_ratio=0.0, first_token_latency_ms=800)
    time.sleep(RESET_SECONDS)
    before = upstream_stats(healthy)["requests"]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=breaker_gateway.url, timeout=30) as client:
            calls = [
                client.post("/v1/chat/completions", json=chat(), headers=AUTH) for _ in range(8)
            ]
            return await asyncio.gather(*calls)

    statuses = sorted(r.status_code for r in asyncio.run(burst()))
    assert statuses == [200] + [503] * 7
    assert upstream_stats(healthy)["requests"] == before + 1


def test_client_errors_never_open_the_circuit(
    breaker_gateway: Transformer, healthy: Upstream
) -> None:
    set_faults(healthy, error_ratio=1.0, error_status=422)
    for _ in range(6):
        response = httpx.post(
            f"{breaker_gateway.url}/v1/chat/completions", json=chat(), headers=AUTH
        )
        assert response.status_code == 422
    assert circuit_state(breaker_gateway) == 0
