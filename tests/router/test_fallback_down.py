"""The shipped ``chat-fallback`` graph when its primary is down, under both status policies.

The primary's host is mapped (``--host-map``) to a port where nothing listens, to a server
that drops every connection, or to one answering a plain-text 503 the way the local front
or Knative's activator does while the transformer is gone. Under the ``client`` policy the
fallback answers; under ``kserve`` KServe's behaviour holds (a 500 from the router: a
transport error, or ``invalid response`` for a body a GJSON condition cannot read).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from nexus.local.front import Backend, Front, RevisionMetrics, front_app
from tests.router.conftest import Models, RouterFactory, sequence
from tests.support.processes import free_port

REPO = Path(__file__).resolve().parents[2]
GRAPH = REPO / "graphs" / "inferencegraph.chat-fallback.yaml"
PRIMARY = "llama-8b.nexus.svc.cluster.local"
FALLBACK = "qwen-1-5b.nexus.svc.cluster.local"
REQUEST = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
FAILED = "Failed to process request"


@pytest.fixture
async def plain_503() -> AsyncIterator[int]:
    """A front whose backend is gone: 503 with a text body (no JSON, no marker)."""

    async def gone(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            status=503, text="revision llama-8b-predictor-00003 is unreachable: reset by peer"
        )

    app = web.Application()
    app.router.add_post("/{tail:.*}", gone)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


@pytest.fixture
async def dropping() -> AsyncIterator[int]:
    """Accepts a connection, reads the request, closes without a byte of answer."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.close()

    port = free_port()
    server = await asyncio.start_server(drop, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def front_of_dead_revision() -> AsyncIterator[int]:
    """The local platform's InferenceService front whose only revision is gone.

    It answers the JSON 503 seen in the chaos run ("revision ... is unreachable"), whose
    ``error.type`` (``service_unavailable``) is not a Nexus transformer's.
    """
    async with aiohttp.ClientSession() as session:
        front = Front(isvc="llama-8b", session=session,
                      metrics=RevisionMetrics(CollectorRegistry()))  # fmt: skip
        dead = f"http://127.0.0.1:{free_port()}"
        front.set_backends([Backend("llama-8b-predictor-00003", dead, 100)])
        runner = web.AppRunner(front_app(front), access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            yield port
        finally:
            await runner.cleanup()


def graph_args(primary_port: int, models: Models, policy: str) -> list[str]:
    return [
        *("--host-map", f"{PRIMARY}=127.0.0.1:{primary_port}"),
        *("--host-map", f"{FALLBACK}=127.0.0.1:{models.port}"),
        *("--status-policy", policy),
    ]


async def assert_fallback_answers(
    url: str, models: Models, client: aiohttp.ClientSession, failed_step: str = "llama-8b"
) -> None:
    async with client.post(url + "/openai/v1/chat/completions", json=REQUEST) as response:
        assert response.status == 200, await response.text()
        assert response.headers["x-nexus-graph-step"] == "qwen-1-5b"
        assert (await response.json())["model"] == "qwen-1-5b"
    [call] = models.calls("/openai/v1/chat/completions")
    assert call.headers["Host"] == FALLBACK
    assert call.headers["X-Nexus-Fallback"] == failed_step
    assert call.json() == REQUEST


async def test_closed_port_falls_back_under_client_policy(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(graph_file=GRAPH, args=graph_args(free_port(), models, "client"))
    await assert_fallback_answers(router.url, models, client)
    async with client.get(router.url + "/metrics") as response:
        text = await response.text()
    assert 'nexus_router_step_responses_total{code="error",step="llama-8b"} 1.0' in text


async def test_plain_503_falls_back_under_client_policy(
    models: Models,
    plain_503: int,
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
) -> None:
    router = start_router(graph_file=GRAPH, args=graph_args(plain_503, models, "client"))
    await assert_fallback_answers(router.url, models, client)


async def test_local_fronts_503_falls_back_under_client_policy(
    models: Models,
    front_of_dead_revision: int,
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
) -> None:
    async with client.post(f"http://127.0.0.1:{front_of_dead_revision}/", json={}) as response:
        assert response.status == 503
        assert "is unreachable" in (await response.json())["error"]["message"]
    args = graph_args(front_of_dead_revision, models, "client")
    router = start_router(graph_file=GRAPH, args=args)
    await assert_fallback_answers(router.url, models, client)


async def test_dropped_connection_falls_back_under_client_policy(
    models: Models,
    dropping: int,
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
) -> None:
    router = start_router(graph_file=GRAPH, args=graph_args(dropping, models, "client"))
    await assert_fallback_answers(router.url, models, client)


async def test_the_default_policy_is_client(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    args = graph_args(free_port(), models, "client")[:-2]
    router = start_router(graph_file=GRAPH, args=args)
    await assert_fallback_answers(router.url, models, client)


async def test_timeout_falls_back_under_client_policy(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    spec = sequence(
        {"name": "slow", "serviceUrl": models.url("/slow/3000")},
        {"name": "fb", "serviceUrl": models.url("/predictions/fb"),
         "condition": "error.upstream_failure"},
    )  # fmt: skip
    spec["routerTimeouts"] = {"serviceClient": 1}
    router = start_router(spec)
    async with client.post(router.url, json={}) as response:
        assert response.status == 200
        assert await response.json() == {"predictions": "fb"}
    assert models.calls("/predictions/fb")[0].headers["X-Nexus-Fallback"] == "slow"


async def test_unreachable_last_step_is_still_the_routers_500(
    start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    # Only a step that a conditional step follows is turned into an upstream failure.
    url = f"http://127.0.0.1:{free_port()}/v1"
    router = start_router(sequence({"name": "gone", "serviceUrl": url}))
    async with client.post(router.url, json={}) as response:
        assert response.status == 500
        body = await response.json()
    assert body["error"] == FAILED
    assert "connection refused" in body["cause"]


async def test_closed_port_is_a_500_under_kserve_policy(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(graph_file=GRAPH, args=graph_args(free_port(), models, "kserve"))
    async with client.post(router.url, json=REQUEST) as response:
        assert response.status == 500
        body = await response.json()
    assert body["error"] == FAILED
    assert body["cause"].startswith(f'Post "http://{PRIMARY}/openai/v1/chat/completions": dial')
    assert models.calls("/openai") == []


async def test_plain_503_is_invalid_response_under_kserve_policy(
    models: Models,
    plain_503: int,
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
) -> None:
    router = start_router(graph_file=GRAPH, args=graph_args(plain_503, models, "kserve"))
    async with client.post(router.url, json=REQUEST) as response:
        assert response.status == 500
        body = await response.json()
    assert body == {"error": FAILED, "cause": "invalid response"}
    assert models.calls("/openai") == []


async def test_split_fallback_falls_back_when_both_split_models_are_down(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    # The primary is a nested Splitter node: its transport error keeps its upstream mark.
    graph = REPO / "graphs" / "inferencegraph.chat-split-fallback.yaml"
    down = free_port()
    args = [
        *("--host-map", f"{PRIMARY}=127.0.0.1:{down}"),
        *("--host-map", f"mistral-7b.nexus.svc.cluster.local=127.0.0.1:{down}"),
        *("--host-map", f"{FALLBACK}=127.0.0.1:{models.port}"),
    ]
    router = start_router(graph_file=graph, args=args)
    for _ in range(4):
        async with client.post(router.url, json=REQUEST) as response:
            assert response.status == 200, await response.text()
            assert response.headers["x-nexus-graph-step"] == "qwen-1-5b"
    calls = models.calls("/openai/v1/chat/completions")
    assert len(calls) == 4
    assert {c.headers["X-Nexus-Fallback"] for c in calls} <= {"llama-8b", "mistral-7b"}
