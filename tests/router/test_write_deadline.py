"""``serverWrite`` passing after a buffered answer's head went out sends no second head.

uvicorn's ``send`` waits for the transport to drain *before* it writes a message
(``uvicorn/protocols/http/httptools_impl.py``, ``RequestResponseCycle.send``), so with a
client that stops reading, the head is written and the body's ``send`` waits: the deadline
can pass between the two. The app is driven through the ASGI protocol itself (lifespan,
then one request) with a ``send`` that waits on the body as uvicorn's would, against a
real step server; a second ``http.response.start`` would make uvicorn raise.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from prometheus_client import generate_latest

from nexus.edge.asgi import ReceiveEvent, SendEvent
from nexus.router.__main__ import build
from nexus.router.graph import parse_spec
from nexus.router.server import RouterApp, RouterState
from tests.router.conftest import Models, sequence

DRAIN_SECONDS = 5.0  # how long the client leaves the body unread: past the 1 s deadline


class Lifespan:
    """The server's side of the ASGI lifespan protocol, as uvicorn drives it."""

    def __init__(self, app: RouterApp) -> None:
        self.app = app
        self.events: asyncio.Queue[ReceiveEvent] = asyncio.Queue()
        self.sent: list[SendEvent] = []
        self.task: asyncio.Task[None] | None = None
        self.answered = asyncio.Event()

    async def _send(self, message: SendEvent) -> None:
        self.sent.append(message)
        self.answered.set()

    async def start(self) -> None:
        self.task = asyncio.create_task(self.app({"type": "lifespan"}, self.events.get, self._send))
        await self.events.put({"type": "lifespan.startup"})
        await asyncio.wait_for(self.answered.wait(), timeout=10)
        assert self.sent == [{"type": "lifespan.startup.complete"}]

    async def stop(self) -> None:
        assert self.task is not None
        await self.events.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(self.task, timeout=10)
        assert self.sent[-1] == {"type": "lifespan.shutdown.complete"}


async def test_no_second_head_when_server_write_passes_during_the_body(models: Models) -> None:
    spec = sequence({"serviceUrl": models.url("/predictions/a")})
    spec["routerTimeouts"] = {"serverWrite": 1}
    app = build(parse_spec(spec), host_map={}, state=RouterState(), any_method=True)
    lifespan = Lifespan(app)
    await lifespan.start()
    sent: list[SendEvent] = []
    request: list[ReceiveEvent] = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> ReceiveEvent:
        if request:
            return request.pop()
        await asyncio.sleep(DRAIN_SECONDS)
        return {"type": "http.disconnect"}

    async def send(message: SendEvent) -> None:
        sent.append(message)
        if message["type"] == "http.response.body":
            await asyncio.sleep(DRAIN_SECONDS)  # the transport is paused: the client reads nothing

    scope: Any = {"type": "http", "method": "POST", "path": "/", "headers": [],
                  "query_string": b"", "http_version": "1.1", "scheme": "http", "root_path": ""}  # fmt: skip
    try:
        await app(scope, receive, send)
    finally:
        await lifespan.stop()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200  # type: ignore[typeddict-item]
    assert orjson.loads(sent[1]["body"])  # type: ignore[typeddict-item]
    scrape = generate_latest(app.metrics.registry).decode()
    assert 'nexus_router_requests_total{code="504"} 1.0' in scrape
