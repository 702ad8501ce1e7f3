"""Method and path (issue 11): only POST runs a graph; model lists and 405s never do.

Real processes: the router serving the shipped ``chat-fallback`` graph and one
transformer per InferenceService (``--host-map`` points the cluster hosts at them); the
official ``openai`` client lists models through the graph.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from tests.router.conftest import Models, Router, RouterFactory, router_process, sequence
from tests.support.processes import free_port
from tests.support.servers import Transformer, transformer

REPO = Path(__file__).resolve().parents[2]
GRAPH = REPO / "graphs" / "inferencegraph.chat-fallback.yaml"
KEY = "methods-key"
ENV = {"GATEWAY_API_KEYS": KEY, "GATEWAY_MODEL_ALIASES": "chat"}
PROPAGATE = r"^Authorization$,^X-Api-Key$,^X-Request-Id$"


@contextlib.contextmanager
def graph_with_transformers(
    tmp: Path, *, fallback_up: bool = True
) -> Iterator[tuple[Router, list[Transformer]]]:
    """The router in front of the graph's two transformers (predictors need not run)."""
    with contextlib.ExitStack() as stack:
        nowhere = f"127.0.0.1:{free_port()}"  # model lists never reach the predictor
        primary = stack.enter_context(
            transformer(tmp, model="llama-8b", predictor_host=nowhere, env=ENV)
        )
        running = [primary]
        fallback_target = f"127.0.0.1:{free_port()}"  # nothing listens: refused
        if fallback_up:
            fallback = stack.enter_context(
                transformer(tmp, model="qwen-1-5b", predictor_host=nowhere, env=ENV)
            )
            running.append(fallback)
            fallback_target = f"127.0.0.1:{fallback.port}"
        host_map = [
            "--host-map", f"llama-8b.nexus.svc.cluster.local=127.0.0.1:{primary.port}",
            "--host-map", f"qwen-1-5b.nexus.svc.cluster.local={fallback_target}",
        ]  # fmt: skip
        router = stack.enter_context(router_process(
            tmp, graph_file=GRAPH, env={"PROPAGATE_HEADERS": PROPAGATE}, args=host_map))  # fmt: skip
        yield router, running


def _ids(body: bytes) -> list[str]:
    listing = orjson.loads(body)
    assert listing["object"] == "list"
    return [entry["id"] for entry in listing["data"]]


async def test_openai_client_lists_the_graphs_models(tmp_path: Path) -> None:
    with graph_with_transformers(tmp_path) as (router, _):
        client = openai.AsyncOpenAI(api_key=KEY, base_url=f"{router.url}/openai/v1")
        try:
            ids = [model.id async for model in client.models.list()]
        finally:
            await client.close()
        # Both steps' models, the shared alias once.
        assert sorted(ids) == ["chat", "llama-8b", "qwen-1-5b"]
        assert len(ids) == len(set(ids))
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{router.url}/v1/models", headers={"X-Api-Key": KEY}) as response,
        ):
            assert response.status == 200
            assert sorted(_ids(await response.read())) == sorted(ids)
        log = router.process.output_with(2, '"request_id"')
    lines = [orjson.loads(line) for line in log.splitlines() if '"request_id"' in line]
    assert [(e["method"], e["path"], e["status"]) for e in lines] == [
        ("GET", "/openai/v1/models", 200),
        ("GET", "/v1/models", 200),
    ]


async def test_a_bad_key_is_401_and_the_openai_client_raises(tmp_path: Path) -> None:
    with graph_with_transformers(tmp_path) as (router, _):
        client = openai.AsyncOpenAI(
            api_key="wrong", base_url=f"{router.url}/openai/v1", max_retries=0
        )
        try:
            with pytest.raises(openai.AuthenticationError) as raised:
                await client.models.list()
        finally:
            await client.close()
        assert raised.value.status_code == 401
        async with aiohttp.ClientSession() as session, session.get(f"{router.url}/v1/models") as r:
            assert r.status == 401
            assert (await r.json())["error"]["type"] == "authentication_error"


async def test_a_step_that_is_down_only_drops_its_models(tmp_path: Path) -> None:
    with graph_with_transformers(tmp_path, fallback_up=False) as (router, _):
        headers = {"Authorization": f"Bearer {KEY}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{router.url}/openai/v1/models", headers=headers) as response,
        ):
            assert response.status == 200
            assert sorted(_ids(await response.read())) == ["chat", "llama-8b"]


async def test_kserve_v1_listings_are_merged_in_openai_shape(
    start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    async def listing(request: web.Request) -> web.Response:
        # The router keeps the cluster host of the step URL in Host (--host-map).
        names = {"a": ["iris"], "b": ["iris", "mnist"]}[request.host.split(".")[0]]
        return web.json_response({"models": names})

    app = web.Application()
    app.router.add_get("/v1/models", listing)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        # Two hosts (the same server under two cluster names) with different listings.
        router = start_router(
            sequence(
                {"serviceUrl": "http://a.example/v1/models/iris:predict"},
                {"serviceUrl": "http://b.example/v1/models/mnist:predict"},
            ),
            args=[
                f"--host-map=a.example=127.0.0.1:{port}",
                f"--host-map=b.example=127.0.0.1:{port}",
            ],
        )
        async with client.get(f"{router.url}/v1/models") as response:
            assert response.status == 200
            assert _ids(await response.read()) == ["iris", "mnist"]
    finally:
        await runner.cleanup()


async def test_no_step_answering_is_an_openai_502(
    start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence({"serviceUrl": f"http://127.0.0.1:{free_port()}/x"}))
    async with client.get(f"{router.url}/v1/models") as response:
        assert response.status == 502
        error = (await response.json())["error"]
        assert error["type"] == "upstream_error"
        assert error["message"] == "no step of this graph answered its model list"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/openai/v1/chat/completions", "POST"),
        ("GET", "/", "POST"),
        ("PUT", "/v1/anything", "POST"),
        ("DELETE", "/openai/v1/chat/completions", "POST"),
        ("PATCH", "/", "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/openai/v1/models", "GET"),
    ],
)
async def test_other_methods_are_405_and_never_run_the_graph(
    models: Models,
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
    method: str,
    path: str,
    allow: str,
) -> None:
    router = start_router(sequence({"name": "echo", "serviceUrl": models.url("/echo")}))
    async with client.request(method, router.url + path, data=b'{"a": 1}') as response:
        assert response.status == 405
        assert response.headers["Allow"] == allow
        assert response.headers["Content-Type"] == "application/json"
        error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "method_not_allowed"
    assert method in error["message"]
    assert path in error["message"]
    assert models.seen == []
    # POST still runs the graph on any path, as in KServe.
    async with client.post(router.url + "/openai/v1/chat/completions", json={"a": 1}) as r:
        assert r.status == 200
        assert await r.json() == {"a": 1}
    async with client.get(router.url + "/metrics") as r:
        assert 'nexus_router_requests_total{code="405"} 1.0' in await r.text()
    assert '"status":405' in router.process.output().replace(" ", "")
