"""End to end: client → router (shipped fallback graph) → two transformers → CPU LLMs.

The graph is ``graphs/inferencegraph.chat-fallback.yaml`` exactly as the cluster reads it;
``--host-map`` points its cluster host names at the local transformers. Both transformers
accept the alias ``chat``, so the same request body (``data: $request``) is valid for the
fallback model too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.router.conftest import Router, router_process
from tests.support.processes import free_port
from tests.support.servers import Transformer, Upstream, cpu_llm, transformer

REPO = Path(__file__).resolve().parents[2]
GRAPH = REPO / "graphs" / "inferencegraph.chat-fallback.yaml"
KEY = "e2e-key"
ENV = {"GATEWAY_API_KEYS": KEY, "GATEWAY_MODEL_ALIASES": "chat"}
PROPAGATE = r"^Authorization$,^X-Api-Key$,^X-Request-Id$,^Traceparent$"
CHAT_PATH = "/openai/v1/chat/completions"


@dataclass
class Platform:
    router: Router
    primary: Transformer
    fallback: Transformer
    fallback_llm: Upstream

    def fallback_requests(self) -> int:
        return int(httpx.get(f"{self.fallback_llm.url}/admin/stats").json()["requests"])


@contextlib.contextmanager
def platform(
    tmp: Path, *, primary_down: bool = False, token_latency_ms: int = 0
) -> Iterator[Platform]:
    llm_args = ("--token-latency-ms", str(token_latency_ms))
    with contextlib.ExitStack() as stack:
        fallback_llm = stack.enter_context(cpu_llm(tmp, model="qwen-1-5b", args=llm_args))
        if primary_down:
            primary_host = f"127.0.0.1:{free_port()}"  # nothing listens: connection refused
        else:
            primary_host = stack.enter_context(cpu_llm(tmp, model="llama-8b", args=llm_args)).host
        primary = stack.enter_context(
            transformer(tmp, model="llama-8b", predictor_host=primary_host, env=ENV)
        )
        fallback = stack.enter_context(
            transformer(tmp, model="qwen-1-5b", predictor_host=fallback_llm.host, env=ENV)
        )
        host_map = [
            "--host-map", f"llama-8b.nexus.svc.cluster.local=127.0.0.1:{primary.port}",
            "--host-map", f"qwen-1-5b.nexus.svc.cluster.local=127.0.0.1:{fallback.port}",
        ]  # fmt: skip
        router = stack.enter_context(router_process(
            tmp, graph_file=GRAPH, env={"PROPAGATE_HEADERS": PROPAGATE}, args=host_map))  # fmt: skip
        yield Platform(router, primary, fallback, fallback_llm)


def chat(**extra: object) -> dict[str, object]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 8, **extra}  # fmt: skip


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_healthy_primary_answers(tmp_path: Path, client: aiohttp.ClientSession) -> None:
    with platform(tmp_path) as p:
        async with client.post(p.router.url + CHAT_PATH, json=chat(),
                               headers={"Authorization": f"Bearer {KEY}"}) as response:  # fmt: skip
            assert response.status == 200
            assert response.headers["x-nexus-graph-step"] == "llama-8b"
            body = await response.json()
        assert body["choices"][0]["message"]["content"]
        assert p.fallback_requests() == 0


async def test_primary_upstream_down_falls_back(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    with platform(tmp_path, primary_down=True) as p:
        async with client.post(p.router.url + CHAT_PATH, json=chat(),
                               headers={"X-Api-Key": KEY}) as response:  # fmt: skip
            assert response.status == 200
            assert response.headers["x-nexus-graph-step"] == "qwen-1-5b"
            body = await response.json()
        assert body["choices"][0]["message"]["content"]
        assert p.fallback_requests() == 1
        async with client.get(p.router.url + "/metrics") as response:
            metrics = await response.text()
        assert (
            'nexus_router_fallbacks_total{from_model="llama-8b",to_model="qwen-1-5b"} 1.0'
            in metrics
        )


async def test_bad_key_on_primary_does_not_fall_back(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    with platform(tmp_path, primary_down=True) as p:
        async with client.post(p.router.url + CHAT_PATH, json=chat(),
                               headers={"Authorization": "Bearer wrong"}) as response:  # fmt: skip
            # The router's `client` status policy (its default): the skipped fallback step
            # ends the Sequence with the primary's status and body, the transformer's 401
            # (KServe's router answers 200: tests/router/test_conformance.py).
            assert response.status == 401
            assert response.headers["x-nexus-graph-step"] == "llama-8b"
            error = (await response.json())["error"]
        assert error["type"] == "authentication_error"
        assert "upstream_failure" not in error
        assert p.fallback_requests() == 0


async def test_streaming_through_router_and_transformer(
    tmp_path: Path, client: aiohttp.ClientSession
) -> None:
    with platform(tmp_path, token_latency_ms=60) as p:
        started = time.monotonic()
        async with client.post(p.router.url + CHAT_PATH, json=chat(stream=True, max_tokens=16),
                               headers={"Authorization": f"Bearer {KEY}"}) as response:  # fmt: skip
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert response.headers["x-nexus-graph-step"] == "llama-8b"
            first = await response.content.readline()
            first_at = time.monotonic() - started
            rest = await response.read()
            total = time.monotonic() - started
        assert first.startswith(b"data: ")
        assert rest.rstrip().endswith(b"data: [DONE]")
        # 16 tokens at 60 ms: the whole answer takes about a second; the first byte must not.
        assert total > 0.8
        assert first_at < total / 3, (first_at, total)
        assert p.fallback_requests() == 0
