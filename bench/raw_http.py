"""The lean floor's upstream hop: keep-alive raw asyncio connections, answers parsed by httptools.

Issue 11 measures both hops against what the same server stack reaches when only its
client is lean. This is that client and nothing more: one POST at a time per connection,
a pool of idle connections reused, the answer's status and body read by
``httptools.HttpResponseParser``. No timeouts, redirects, chunked request bodies or TLS:
it is a measuring stick, independent of the ``nexus`` code it measures.
"""

from __future__ import annotations

import asyncio

import httptools


class _Connection(asyncio.Protocol):
    """One keep-alive connection; ``exchange`` sends a request and awaits its whole answer."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.answer: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"unparsable answer: {exc}"))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result((self.parser.get_status_code(), b"".join(self.body)))
        self.body = []
        if not self.parser.should_keep_alive():
            self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("upstream closed the connection"))

    def _fail(self, error: BaseException) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(error)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.answer


class Pool:
    """Idle connections to one ``host:port``, reused last-in first-out."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[_Connection] = []

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body`` as JSON to ``path``: the answer's status and body."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        connection = await self._checkout()
        try:
            answer = await connection.exchange(head + body)
        except BaseException:
            connection.close()  # an answer may still be on its way: never reuse it
            raise
        if not connection.closed:
            self.idle.append(connection)
        return answer

    async def _checkout(self) -> _Connection:
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                return connection
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()
