"""The router's status policy: ``client`` (default) against ``kserve``, chosen by flag or env.

KServe answers 200 when a Sequence stops at a conditional step whose condition does not
hold, whatever the previous step's status (``router/sequence.py``); an OpenAI client then
cannot tell a 401 or 429 from a success. Under ``client`` the answering step's status is
the graph's status.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web
from openai import AsyncOpenAI, AuthenticationError, RateLimitError
from openai.types.chat import ChatCompletionMessageParam

from nexus.errors import AuthenticationFailed, NexusError, RateLimited
from tests.router.conftest import Models, RouterFactory, sequence
from tests.support.processes import free_port, python_module

GRAPHS = sorted((Path(__file__).resolve().parents[2] / "graphs").glob("*.yaml"))
LIMITER_DOWN = {
    "error": {
        "message": "rate limiter unavailable",
        "type": "server_error",
        "code": "limiter_unavailable",
        "param": None,
    }
}


def fallback_spec(primary_url: str, models: Models) -> dict[str, object]:
    return sequence(
        {"name": "primary", "serviceUrl": primary_url},
        {"name": "fallback", "serviceUrl": models.url("/predictions/fb"),
         "condition": "error.upstream_failure"},
    )  # fmt: skip


@pytest.mark.parametrize("code", [401, 429, 400])
async def test_client_policy_returns_the_skipping_steps_status(
    code: int, models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(fallback_spec(models.url(f"/status/{code}"), models))
    async with client.post(router.url, json={}) as response:
        assert response.status == code
        assert response.headers["x-nexus-graph-step"] == "primary"
        assert await response.json() == {"error": f"status {code}"}
    assert models.calls("/predictions/fb") == []


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--status-policy", "kserve"], {}),
        ([], {"NEXUS_ROUTER_STATUS_POLICY": "kserve"}),
    ],
    ids=["flag", "env"],
)
async def test_kserve_policy_keeps_the_200(
    args: list[str],
    env: dict[str, str],
    models: Models,
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
) -> None:
    router = start_router(fallback_spec(models.url("/status/401"), models), args=args, env=env)
    async with client.post(router.url, json={}) as response:
        assert response.status == 200
        assert await response.json() == {"error": "status 401"}


async def test_the_flag_overrides_the_environment(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(
        fallback_spec(models.url("/status/429"), models),
        args=["--status-policy", "client"],
        env={"NEXUS_ROUTER_STATUS_POLICY": "kserve"},
    )
    async with client.post(router.url, json={}) as response:
        assert response.status == 429


def test_an_unknown_policy_refuses_to_start() -> None:
    spec = orjson.dumps(sequence({"serviceUrl": "http://127.0.0.1:1/"})).decode()
    cmd = python_module("nexus.router", "--graph-json", spec, "--port", str(free_port()),
                        "--host", "127.0.0.1")  # fmt: skip
    done = subprocess.run(
        cmd,
        env={**os.environ, "NEXUS_ROUTER_STATUS_POLICY": "strict"},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"NEXUS_ROUTER_STATUS_POLICY must be one of client, kserve, got 'strict'" in (
        done.stdout + done.stderr
    )
    flag = subprocess.run(
        [*cmd, "--status-policy", "strict"], capture_output=True, timeout=30, check=False
    )
    assert flag.returncode == 2
    assert b"invalid choice: 'strict'" in flag.stderr


@pytest.fixture
async def limiter_down() -> AsyncIterator[str]:
    """A transformer whose own 503 is an OpenAI error without ``upstream_failure``."""

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(LIMITER_DOWN, status=503)

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


async def test_a_transformers_own_json_5xx_is_kept_not_turned_into_a_fallback(
    limiter_down: str,
    models: Models,
    start_router: RouterFactory,
    client: aiohttp.ClientSession,
) -> None:
    # The transformer decides which of its failures are upstream failures; the router only
    # substitutes for answers that are not its JSON.
    router = start_router(fallback_spec(limiter_down, models))
    async with client.post(router.url, json={}) as response:
        assert response.status == 503
        assert await response.json() == LIMITER_DOWN
    assert models.calls("/predictions/fb") == []


async def test_a_non_error_json_5xx_becomes_an_upstream_failure(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    # {"error": "status 503"} is not the transformer's shape (no error.type): a front's body.
    router = start_router(fallback_spec(models.url("/status/503"), models))
    async with client.post(router.url, json={}) as response:
        assert response.status == 200
        assert await response.json() == {"predictions": "fb"}
    [call] = models.calls("/predictions/fb")
    assert call.headers["X-Nexus-Fallback"] == "primary"


@pytest.fixture
async def refusing() -> AsyncIterator[tuple[int, list[int]]]:
    """Transformers that refuse every request with ``statuses[0]``, in ``nexus.errors`` shape."""
    statuses = [401]

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        error: NexusError = (
            AuthenticationFailed("invalid API key")
            if statuses[0] == 401
            else RateLimited("rate limit exceeded", retry_after=1)
        )
        return web.Response(status=error.status, body=error.body_bytes(),
                            content_type="application/json")  # fmt: skip

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, statuses
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda p: p.stem)
async def test_openai_client_raises_for_a_bad_key_and_a_spent_limit_through_every_graph(
    graph: Path, refusing: tuple[int, list[int]], start_router: RouterFactory
) -> None:
    port, statuses = refusing
    args = [arg for host in ("llama-8b", "qwen-1-5b", "mistral-7b")
            for arg in ("--host-map", f"{host}.nexus.svc.cluster.local=127.0.0.1:{port}")]  # fmt: skip
    router = start_router(graph_file=graph, args=args)
    openai = AsyncOpenAI(base_url=router.url + "/openai/v1", api_key="wrong", max_retries=0)
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    async with openai:
        with pytest.raises(AuthenticationError):
            await openai.chat.completions.create(model="chat", messages=messages)
        statuses[0] = 429
        with pytest.raises(RateLimitError):
            await openai.chat.completions.create(model="chat", messages=messages)
