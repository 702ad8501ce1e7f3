"""A transformer process in front of a real vLLM-shaped upstream, shared by a test module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import orjson
import pytest

from tests.support.servers import Transformer, Upstream, cpu_llm, transformer

KEY = "test-key-good"
LIMITED_KEY = "test-key-limited"
TOKEN_KEY = "test-key-tokens"
JWT_SECRET = "test-only-jwt-secret-0123456789abcdef"
MAX_BODY = 4096

POLICIES = {
    LIMITED_KEY: {"allowed_models": ["someone-else"], "tenant": "acme"},
    TOKEN_KEY: {"tokens_per_minute": 10_000, "rate_limit_per_minute": 1000},
}

BASE_ENV = {
    "GATEWAY_API_KEYS": f"{KEY},{LIMITED_KEY},{TOKEN_KEY}",
    "GATEWAY_API_KEY_POLICIES": orjson.dumps(POLICIES).decode(),
    "GATEWAY_JWT_SECRET": JWT_SECRET,
    "GATEWAY_MODEL_ALIASES": "primary",
    "GATEWAY_MAX_BODY_BYTES": str(MAX_BODY),
    "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
    "GATEWAY_TOKENS_PER_MINUTE": "100000000",
}


def token(**claims: Any) -> str:
    return pyjwt.encode({"sub": "svc", "exp": int(time.time()) + 300, **claims}, JWT_SECRET)


def chat(model: str = "chat", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4,
            **extra}  # fmt: skip


def set_faults(upstream: Upstream, **faults: Any) -> None:
    httpx.post(f"{upstream.url}/admin/faults", json=faults).raise_for_status()


def upstream_stats(upstream: Upstream) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{upstream.url}/admin/stats").json()
    return stats


HEALTHY = {"error_ratio": 0.0, "error_status": 500, "hang": False, "token_latency_ms": 0,
           "first_token_latency_ms": 0, "break_stream_after": 0}  # fmt: skip


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("transformer")


@pytest.fixture(scope="module")
def llm(module_tmp: Path) -> Iterator[Upstream]:
    with cpu_llm(module_tmp) as server:
        yield server


@pytest.fixture(scope="module")
def gateway(module_tmp: Path, llm: Upstream) -> Iterator[Transformer]:
    with transformer(module_tmp, model="chat", predictor_host=llm.host, env=BASE_ENV) as server:
        yield server


@pytest.fixture
def healthy(llm: Upstream) -> Iterator[Upstream]:
    """The shared upstream, reset to healthy before and after the test."""
    set_faults(llm, **HEALTHY)
    yield llm
    set_faults(llm, **HEALTHY)


@pytest.fixture
def client(gateway: Transformer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        yield c
