"""The upstream HTTP/1.1 client both servers use: keep-alive pools of asyncio connections.

Each connection is an ``asyncio.Protocol`` whose responses ``httptools`` parses (no
streams, no per-request tasks). Measured with wrk (32 connections) through the same
uvicorn pass-through to ``bench/fast_upstream.py``, on the 2-core development machine:
24,200-24,500 req/s and 40 µs of CPU per request with this client, against 8,000-8,200
req/s and 121-125 µs with aiohttp's (issue 11).

- **Pool.** Idle connections are kept per origin (scheme, host, port), newest first, at
  most ``max_idle`` each, for ``idle_seconds`` (4 s by default: below uvicorn's 5 s
  ``timeout_keep_alive`` default, which both our servers and vLLM's keep, so we rarely
  write into a connection the server is closing). A connection goes back to the pool
  only after its response was read whole with keep-alive; an error, an early close,
  ``Connection: close`` or a response abandoned mid-body closes it.
- **Responses.** ``status``, ``headers`` (lower-cased byte names), and the body read
  whole (``read(limit)``) or streamed (``chunks()``): Content-Length, chunked (httptools
  decodes it) and close-delimited bodies. Reading pauses while more than ``HIGH_WATER``
  bytes wait for a slow consumer. HEAD and ``Expect: 100-continue`` are not supported.
- **Timeouts.** ``connect_timeout`` bounds the dial; ``read_timeout`` bounds the wait for
  the whole response head, then each wait for body bytes (a token stream may last long,
  but not fall silent). Cancelling the awaiting task closes the connection at once, so a
  caller's own deadline (``asyncio.timeout``) or a client leaving mid-stream closes the
  upstream socket too.
- **Faults.** Socket, timer and parser errors become ``nexus.edge.failures`` in one place,
  :func:`transport_error`; nothing else here raises anything but ``TransportError``.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from nexus.edge.failures import (
    ConnectFailed,
    ConnectionBroken,
    MalformedResponse,
    ResponseTooLarge,
    TransportError,
    TransportTimeout,
)

HIGH_WATER = 256 * 1024  # buffered body bytes before the socket stops being read
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
DEFAULT_IDLE_SECONDS = 4.0
DEFAULT_MAX_IDLE = 256

# Go's net package words these errnos so (syscall/zerrors_linux_*.go); the router repeats
# them in its step errors, and nothing else of the OS's text (addresses) is kept.
_DIAL_REASONS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network is unreachable",
    errno.ETIMEDOUT: "connection timed out",
    errno.EADDRNOTAVAIL: "cannot assign requested address",
}
_BROKEN_REASONS = {
    errno.ECONNRESET: "connection reset by peer",
    errno.EPIPE: "broken pipe",
    errno.ECONNABORTED: "software caused connection abort",
}


def transport_error(exc: BaseException, *, dialing: bool = False) -> TransportError:
    """The one translation of a socket, timer or parser error into a ``TransportError``."""
    if isinstance(exc, TransportError):
        return exc
    if isinstance(exc, TimeoutError):  # before OSError: TimeoutError is one
        return TransportTimeout("i/o timeout" if dialing else "timeout")
    if isinstance(exc, socket.gaierror):
        return ConnectFailed("no such host")
    if isinstance(exc, ssl.SSLError):
        return ConnectFailed("tls handshake failed") if dialing else ConnectionBroken()
    if isinstance(exc, OSError):
        if dialing:
            return ConnectFailed(_DIAL_REASONS.get(exc.errno or 0, "connection failed"))
        return ConnectionBroken(_BROKEN_REASONS.get(exc.errno or 0, "EOF"))
    if isinstance(exc, httptools.HttpParserError):
        return MalformedResponse()
    return TransportError()


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a connection goes: scheme, host, port, and the ``Host`` header it carries."""

    scheme: str
    host: str
    port: int
    authority: str

    @classmethod
    def of(cls, url: str) -> tuple[Origin, str]:
        """The origin of an absolute http(s) URL and its request target (path and query)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, parts.netloc), target


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parser callbacks fill the state of the current response."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.busy = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.received = False  # a byte of the current response arrived
        self.framed = False  # Content-Length or Transfer-Encoding: EOF does not end the body
        self.informational = False
        self.keep_alive = False
        self.fault: TransportError | None = None
        self.body: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:  # HttpParserUpgrade included
            self._fail(transport_error(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.head_done and not self.framed and exc is None and self.fault is None:
            self.complete = True  # a close-delimited body ends here (RFC 9112 §6.3, item 8)
        elif self.fault is None:
            self.fault = ConnectionBroken() if exc is None else transport_error(exc)
        self._wake()

    # -- httptools callbacks ---------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or name == b"transfer-encoding":
            self.framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: another head follows for the same request
            self.informational = True
            self.headers = []
            self.framed = False
            return
        self.status = status
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()
        self._wake()

    # -- used by the client and Response ---------------------------------------------

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self.busy = True
        self.transport.write(data)

    async def head(self, within: float | None) -> None:
        """Wait until the response head is complete (within ``within`` seconds in all)."""
        deadline = None if within is None else self.loop.time() + within
        while not self.head_done:
            if self.fault is not None:
                raise self.fault
            await self._wait(deadline)

    async def next_chunk(self, idle: float | None) -> bytes | None:
        """Body bytes buffered so far, waiting ``idle`` s at most for some; ``None`` at the end."""
        while True:
            if self.body:
                data = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                self.body.clear()
                self.buffered = 0
                if self.paused and self.transport is not None and not self.closed:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return None
            if self.fault is not None:
                raise self.fault
            await self._wait(None if idle is None else self.loop.time() + idle)

    def close(self, fault: TransportError | None = None) -> None:
        """Close at once; a read waiting on this connection ends with ``fault``."""
        if self.fault is None and not self.complete:
            self.fault = fault or ConnectionBroken("connection closed")
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self._wake()

    def recycle(self, now: float) -> None:
        """Ready for the next request on the same socket."""
        self._reset()
        self.busy = False
        self.reused = True
        self.idle_since = now

    def _fail(self, fault: TransportError) -> None:
        if self.fault is None:
            self.fault = fault
        self.close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def _wait(self, deadline: float | None) -> None:
        waiter = self.waiter = self.loop.create_future()
        if deadline is None:
            await waiter
            return
        timer = self.loop.call_at(deadline, self._time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._fail(TransportTimeout())


class Response:
    """A response whose head has arrived; read its body whole or as chunks, or close it."""

    __slots__ = ("_client", "_conn", "_done", "_origin", "headers", "status")

    def __init__(self, conn: _Connection, client: HttpClient, origin: Origin) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn = conn
        self._client = client
        self._origin = origin
        self._done = False

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header (``name`` lower case), or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def content_type(self) -> bytes:
        return self.header(b"content-type") or b""

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body; ``ResponseTooLarge`` (connection closed) once it passes ``limit``."""
        if limit is not None:
            declared = self.header(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                self.close()
                raise ResponseTooLarge(limit)
        conn, timeout = self._conn, self._client.read_timeout
        parts: list[bytes] = []
        size = 0
        try:
            while (chunk := await conn.next_chunk(timeout)) is not None:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise ResponseTooLarge(limit)
                parts.append(chunk)
        except BaseException:
            self.close()
            raise
        self._finish()
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises ``TransportError`` when the upstream breaks off.

        Leaving the loop early (``break``, an exception, cancellation) closes the connection.
        """
        conn, timeout = self._conn, self._client.read_timeout
        try:
            while (chunk := await conn.next_chunk(timeout)) is not None:
                yield chunk
        except BaseException:
            self.close()
            raise
        self._finish()

    def close(self) -> None:
        """Abandon the response: the connection closes unless the body was read whole."""
        if not self._done:
            self._done = True
            self._conn.body.clear()  # nothing more reaches a reader that was left
            self._conn.close()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._client._release(self._origin, self._conn)


class HttpClient:
    """Keep-alive pools per origin; one per server process, closed with it."""

    def __init__(
        self,
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        max_idle: int = DEFAULT_MAX_IDLE,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_seconds = idle_seconds
        self.max_idle = max_idle
        self._idle: dict[Origin, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None
        self.connections_made = 0  # for tests and benchmarks: dials since start

    async def request(
        self,
        method: str,
        origin: Origin,
        target: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        host: str | None = None,
    ) -> Response:
        """Send a request and wait for the response head; raises only ``TransportError``.

        ``host`` replaces the origin's authority in the ``Host`` header.
        """
        head = _request_head(method, target, host or origin.authority, headers, body)
        # A pooled connection the server closed while idle is skipped (``closed``). One
        # that breaks after our write but before any byte of the answer is retried once on
        # a fresh connection only for idempotent methods: a POST may have reached a model
        # that is now generating (and charging tokens), and a server that closed an idle
        # connection at that instant cannot be told from one that crashed while working.
        # Go's Transport decides the same way (net/http transport.go, shouldRetryRequest).
        retry = method in IDEMPOTENT
        while True:
            conn = self._pooled(origin) or await self._dial(origin)
            conn.send(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.send(body)
            try:
                await conn.head(self.read_timeout)
            except TransportError as exc:
                conn.close()
                if (
                    retry
                    and conn.reused
                    and not conn.received
                    and isinstance(exc, ConnectionBroken)
                ):
                    retry = False
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            return Response(conn, self, origin)

    async def close(self) -> None:
        """Close every idle connection (responses in flight close with their readers)."""
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    def _pooled(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        oldest = asyncio.get_running_loop().time() - self.idle_seconds
        while idle:
            conn = idle.pop()
            transport = conn.transport
            if (
                conn.closed
                or conn.idle_since < oldest
                or transport is None
                or transport.is_closing()
            ):
                conn.close()
                continue
            return conn
        return None

    async def _dial(self, origin: Origin) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if origin.scheme == "https" else None
        try:
            if self.connect_timeout is None:
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), origin.host, origin.port, ssl=tls
                )
            else:
                async with asyncio.timeout(self.connect_timeout):
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop), origin.host, origin.port, ssl=tls
                    )
        except (OSError, TimeoutError) as exc:  # ssl.SSLError and gaierror are OSErrors
            raise transport_error(exc, dialing=True) from exc
        self.connections_made += 1
        return conn

    def _release(self, origin: Origin, conn: _Connection) -> None:
        if conn.closed or not conn.keep_alive:
            conn.close()
            return
        now = asyncio.get_running_loop().time()
        idle = self._idle.setdefault(origin, [])
        oldest = now - self.idle_seconds
        while idle and (idle[0].closed or idle[0].idle_since < oldest):
            idle.pop(0).close()
        if len(idle) >= self.max_idle:
            conn.close()
            return
        conn.recycle(now)
        idle.append(conn)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls


def _request_head(
    method: str, target: str, host: str, headers: Iterable[tuple[str, str]], body: bytes
) -> bytes:
    """The request line and header block; a CR or LF in a field is refused (``ValueError``)."""
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} carries a line break")
        lines.append(f"{name}: {value}\r\n")
    if body or method not in IDEMPOTENT:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")
