"""The ASGI primitives both servers use, typed, without a framework in between.

The message shapes follow the ASGI HTTP and lifespan specs as uvicorn types them
(``uvicorn/_types.py``); only the keys our servers read or write are declared, since a
``TypedDict`` is a plain ``dict`` at run time and the server may send more.

One body reader (size limit, declared ``Content-Length``, client disconnect), one
responder, one request-id rule and one lifespan loop serve the transformer and the router
alike.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from nexus.errors import InvalidRequest, PayloadTooLarge

Headers = list[tuple[bytes, bytes]]


class HTTPScope(TypedDict):
    type: Literal["http"]
    method: str
    path: str
    headers: Headers
    query_string: bytes
    http_version: str
    scheme: str
    root_path: str
    raw_path: NotRequired[bytes | None]


class LifespanScope(TypedDict):
    type: Literal["lifespan"]


class WebSocketScope(TypedDict):
    type: Literal["websocket"]
    path: str
    headers: Headers


Scope = HTTPScope | LifespanScope | WebSocketScope


class HTTPRequestEvent(TypedDict):
    type: Literal["http.request"]
    body: bytes
    more_body: bool


class HTTPDisconnectEvent(TypedDict):
    type: Literal["http.disconnect"]


class LifespanStartupEvent(TypedDict):
    type: Literal["lifespan.startup"]


class LifespanShutdownEvent(TypedDict):
    type: Literal["lifespan.shutdown"]


class HTTPResponseStartEvent(TypedDict):
    type: Literal["http.response.start"]
    status: int
    headers: Headers


class HTTPResponseBodyEvent(TypedDict):
    type: Literal["http.response.body"]
    body: bytes
    more_body: NotRequired[bool]


class LifespanDoneEvent(TypedDict):
    type: Literal["lifespan.startup.complete", "lifespan.shutdown.complete"]


class LifespanFailedEvent(TypedDict):
    type: Literal["lifespan.startup.failed"]
    message: str


ReceiveEvent = HTTPRequestEvent | HTTPDisconnectEvent | LifespanStartupEvent | LifespanShutdownEvent
SendEvent = HTTPResponseStartEvent | HTTPResponseBodyEvent | LifespanDoneEvent | LifespanFailedEvent
Receive = Callable[[], Awaitable[ReceiveEvent]]
Send = Callable[[SendEvent], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# A third-party app (KServe's FastAPI app) types its arguments its own way.
ForeignApp = Callable[[Any, Any, Any], Awaitable[None]]

JSON = b"application/json"
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


class ClientDisconnected(Exception):
    """The client went away before its request body arrived."""


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of ``name`` (lower case, as ASGI servers give names), or ``None``."""
    for key, value in headers:
        if key == name:
            return value
    return None


async def read_body(receive: Receive, *, limit: int, content_length: bytes | None) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes before reading them.

    A declared ``Content-Length`` over the limit is a 413 before any byte is read; a
    chunked body is a 413 as soon as it passes the limit; a client that leaves first
    raises ``ClientDisconnected`` (logged as 499 by both servers).
    """
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise InvalidRequest("Content-Length is not a number") from None
        if declared > limit:
            raise PayloadTooLarge(
                f"request body of {declared} bytes exceeds the {limit}-byte limit"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields an already-read body once, then defers to the real one."""
    sent = False

    async def again() -> ReceiveEvent:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def answer(
    status: int, body: bytes, headers: Headers
) -> tuple[HTTPResponseStartEvent, HTTPResponseBodyEvent]:
    """The two messages of a whole answer: ``headers`` plus the body's ``Content-Length``,
    then the body. ``headers`` is extended in place: callers pass a list built for it."""
    headers.append((b"content-length", b"%d" % len(body)))
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


async def respond(send: Send, status: int, body: bytes, headers: Headers) -> None:
    """A whole answer (``answer``), sent."""
    head, rest = answer(status, body, headers)
    await send(head)
    await send(rest)


async def serve_lifespan(
    receive: Receive,
    send: Send,
    *,
    startup: Callable[[], Awaitable[None]],
    shutdown: Callable[[], Awaitable[None]],
) -> None:
    """The ASGI lifespan protocol: ``startup`` once, ``shutdown`` once; a failed start is
    reported as ``lifespan.startup.failed`` (uvicorn then exits) rather than raised."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:  # noqa: BLE001 - reported to the server, which exits
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond_json(send: Send, status: int, payload: object, headers: Headers) -> None:
    await respond(send, status, orjson.dumps(payload), [(b"content-type", JSON), *headers])


def request_id_from(value: bytes | None) -> str:
    """The caller's ``x-request-id`` when it is a sane token, otherwise a fresh one."""
    if value and _REQUEST_ID.fullmatch(value):
        return value.decode()
    return f"{_id_prefix}{next(_id_counter):016x}"


def _new_id_source() -> None:
    """Fresh ids without a system call per request: 64 random bits per process (again in
    a forked child) and a counter, 32 hex digits like the ``uuid4().hex`` they replace."""
    global _id_prefix, _id_counter
    _id_prefix = os.urandom(8).hex()
    _id_counter = itertools.count()


_id_prefix = ""
_id_counter = itertools.count()
_new_id_source()
os.register_at_fork(after_in_child=_new_id_source)


def trace_id_from(traceparent: bytes | None) -> str | None:
    if traceparent:
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match:
            return match.group(1).decode()
    return None
