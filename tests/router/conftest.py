"""Real upstream model servers (aiohttp, in the test's loop) and the router as a process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from tests.support.processes import Managed, free_port, managed, python_module


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Models:
    """One aiohttp server playing every model a graph needs; records what it receives."""

    port: int
    seen: list[Seen] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def calls(self, prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(prefix)]


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(value), content_type="application/json")


def _models_app(models: Models) -> web.Application:
    async def record(request: web.Request) -> bytes:
        body = await request.read()
        models.seen.append(Seen(request.path, dict(request.headers), body))
        return body

    async def predictions(request: web.Request) -> web.Response:
        await record(request)
        return _json({"predictions": request.match_info["value"]})

    async def label(request: web.Request) -> web.Response:
        await record(request)
        return _json({"predictions": [{"label": request.match_info["label"], "score": [0.8, 0.2]}]})

    async def echo(request: web.Request) -> web.Response:
        body = await record(request)
        return web.Response(body=body, headers={"Content-Type": "application/json"})

    async def status(request: web.Request) -> web.Response:
        await record(request)
        code = int(request.match_info["code"])
        return _json({"error": f"status {code}"}, status=code)

    async def upstream_failure(request: web.Request) -> web.Response:
        if request.path == "/upstream-failure":
            await record(request)
        error = {
            "message": "upstream refused",
            "type": "upstream_error",
            "code": "upstream_unavailable",
            "param": None,
            "upstream_failure": True,
        }
        return _json({"error": error}, status=502)

    async def text(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=202, text="plain words, not json")

    async def array(request: web.Request) -> web.Response:
        await record(request)
        return _json([1, 2])

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(int(request.match_info["ms"]) / 1000)
        return _json({"predictions": "slow"})

    async def sse(request: web.Request) -> web.StreamResponse:
        await record(request)
        count, gap = int(request.match_info["count"]), int(request.match_info["gap_ms"]) / 1000
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(count):
            await response.write(f'data: {{"n": {i}}}\n\n'.encode())
            await asyncio.sleep(gap)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def chat(request: web.Request) -> web.Response:
        """An OpenAI route per cluster host (the router keeps the Host of the manifest URL)."""
        await record(request)
        model = request.host.split(".")[0]
        if model in models.failing:
            return await upstream_failure(request)
        return _json({"model": model, "choices": [{"message": {"content": "hi"}}]})

    async def deep(request: web.Request) -> web.Response:
        """An answer nested ``depth`` levels deep (hostile or broken step)."""
        await record(request)
        depth = int(request.match_info["depth"])
        return web.Response(body=b"[" * depth + b"]" * depth, content_type="application/json")

    async def big(request: web.Request) -> web.Response:
        await record(request)
        size = int(request.match_info["size"])
        return web.Response(body=b'"' + b"x" * (size - 2) + b'"', content_type="application/json")

    async def cut(request: web.Request) -> web.StreamResponse:
        """Promises 1,000 bytes, sends 10, then drops the connection."""
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Content-Length": "1000"})  # fmt: skip
        await response.prepare(request)
        await response.write(b'{"partial"')
        assert request.transport is not None
        request.transport.close()
        return response

    app = web.Application()
    app.router.add_post("/deep/{depth}", deep)
    app.router.add_post("/big/{size}", big)
    app.router.add_post("/cut", cut)
    app.router.add_post("/openai/v1/chat/completions", chat)
    app.router.add_post("/predictions/{value}", predictions)
    app.router.add_post("/label/{label}", label)
    app.router.add_post("/echo", echo)
    app.router.add_post("/echo/{name}", echo)
    app.router.add_post("/status/{code}", status)
    app.router.add_post("/upstream-failure", upstream_failure)
    app.router.add_post("/text", text)
    app.router.add_post("/array", array)
    app.router.add_post("/slow/{ms}", slow)
    app.router.add_post("/sse/{count}/{gap_ms}", sse)
    return app


@pytest.fixture
async def models() -> AsyncIterator[Models]:
    server = Models(port=free_port())
    runner = web.AppRunner(_models_app(server), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", server.port)
    await site.start()
    try:
        yield server
    finally:
        await runner.cleanup()


@dataclass
class Router:
    port: int
    process: Managed

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def router_process(
    tmp: Path,
    *,
    spec: Mapping[str, Any] | None = None,
    graph_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> Iterator[Router]:
    """``python -m nexus.router`` on a free port, ready when ``/readyz`` answers."""
    port = free_port()
    source = ["--graph-file", str(graph_file)] if graph_file else [
        "--graph-json", orjson.dumps(spec).decode()]  # fmt: skip
    cmd = python_module("nexus.router", *source, "--port", str(port), "--host", "127.0.0.1",
                        "--drain-seconds", "0", *args)  # fmt: skip
    with managed(cmd, log=tmp / f"router-{port}.log", env=env,
                 ready_url=f"http://127.0.0.1:{port}/readyz") as process:  # fmt: skip
        yield Router(port=port, process=process)


RouterFactory = Callable[..., Router]


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[RouterFactory]:
    """Start routers inside a test; every one is stopped when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(spec: Mapping[str, Any] | None = None, **kwargs: Any) -> Router:
            return stack.enter_context(router_process(tmp_path, spec=spec, **kwargs))

        yield start


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sequence(*steps: dict[str, Any], **nodes: dict[str, Any]) -> dict[str, Any]:
    """A spec whose root is a Sequence of ``steps``, plus any extra named nodes."""
    return {"nodes": {"root": {"routerType": "Sequence", "steps": list(steps)}, **nodes}}
