"""The upstream client (``nexus.edge.client``) against real loopback servers.

The servers are raw asyncio servers so that each test decides, byte by byte, what the
upstream sends and when it closes or resets; connections are counted on the server side.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import pytest

from nexus.edge.client import HttpClient, Origin
from nexus.edge.failures import (
    ConnectFailed,
    ConnectionBroken,
    MalformedResponse,
    ResponseTooLarge,
    TransportError,
    TransportTimeout,
)
from tests.support.processes import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Loopback:
    """A raw HTTP server on a free port; counts the connections it accepted and saw close."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.closed = asyncio.Event()  # set each time a connection ends
        self.eof = asyncio.Event()  # set when the client closed a connection first
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Loopback:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def origin(self) -> Origin:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return Origin.of(f"http://127.0.0.1:{port}/")[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.closed.set()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head, body) of the next request, or ``None`` when the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.lower().split(b"\r\n"):
        if line.startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answer(status: int, body: bytes, *extra: bytes) -> bytes:
    lines = [b"HTTP/1.1 %d X" % status, b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request on the connection with its own head's first line."""
    while (request := await read_request(reader)) is not None:
        head, body = request
        status = 404 if b" /missing " in head else 200
        writer.write(answer(status, head.split(b"\r\n")[0] + b"|" + body))
        await writer.drain()


async def wait_for_eof(reader: asyncio.StreamReader, seconds: float = 2.0) -> bool:
    """Whether the client closed the connection within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            return await reader.read(65536) == b""
    except TimeoutError:
        return False


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- keep-alive and bodies ---------------------------------------------------------------


async def test_keep_alive_reuses_one_connection_and_sends_host_and_body() -> None:
    client = HttpClient()
    async with Loopback(keep_alive) as server:
        for n in range(5):
            response = await client.request(
                "POST", server.origin, f"/n/{n}", headers=[("X-A", "1")], body=b"hi"
            )
            assert response.status == 200
            assert await response.read() == f"POST /n/{n} HTTP/1.1|hi".encode()
        assert server.accepted == 1
        assert client.connections_made == 1
        await client.close()


async def test_connection_is_reused_after_an_error_reply_read_whole() -> None:
    client = HttpClient()
    async with Loopback(keep_alive) as server:
        missing = await client.request("GET", server.origin, "/missing")
        assert missing.status == 404
        assert await missing.read() == b"GET /missing HTTP/1.1|"
        ok = await client.request("GET", server.origin, "/")
        assert (ok.status, await ok.read()) == (200, b"GET / HTTP/1.1|")
        assert server.accepted == 1
        await client.close()


async def test_chunked_body_is_decoded_and_the_connection_kept() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")  # fmt: skip
            await writer.drain()

    client = HttpClient()
    async with Loopback(chunked) as server:
        for _ in range(2):
            response = await client.request("GET", server.origin, "/")
            assert await response.read() == b"hello world"
        assert server.accepted == 1
        await client.close()


async def test_close_delimited_body_ends_at_eof_and_is_not_reused() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    client = HttpClient()
    async with Loopback(until_close) as server:
        for _ in range(2):
            response = await client.request("GET", server.origin, "/")
            assert response.content_type == b"text/plain"
            assert await response.read() == b"all of it"
        assert server.accepted == 2
        await client.close()


async def test_connection_close_answer_is_not_reused() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(200, b"x", b"Connection: close"))
        await writer.drain()
        await wait_for_eof(reader)

    client = HttpClient()
    async with Loopback(closing) as server:
        for _ in range(2):
            assert await (await client.request("GET", server.origin, "/")).read() == b"x"
        assert server.accepted == 2
        await client.close()


async def test_large_chunked_stream_arrives_whole_through_backpressure() -> None:
    block = bytes(range(256)) * 4096  # 1 MiB

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(4):
            writer.write(b"%x\r\n" % len(block) + block + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await read_request(reader)

    client = HttpClient()
    async with Loopback(big) as server:
        response = await client.request("GET", server.origin, "/")
        received = bytearray()
        async for chunk in response.chunks():
            received += chunk
            await asyncio.sleep(0)  # a slow consumer: the socket pauses meanwhile
        assert bytes(received) == block * 4
        await client.close()


async def test_streamed_chunks_arrive_before_the_body_ends() -> None:
    go_on = asyncio.Event()

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n6\r\ndata:1\r\n")  # fmt: skip
        await writer.drain()
        await go_on.wait()
        writer.write(b"6\r\ndata:2\r\n0\r\n\r\n")
        await writer.drain()
        await keep_alive(reader, writer)

    client = HttpClient(read_timeout=5)
    async with Loopback(stream) as server:
        response = await client.request("POST", server.origin, "/", body=b"{}")
        chunks = response.chunks()
        assert await anext(chunks) == b"data:1"
        go_on.set()
        assert [c async for c in chunks] == [b"data:2"]
        again = await client.request("GET", server.origin, "/")  # reused after a whole stream
        assert await again.read() == b"GET / HTTP/1.1|"
        assert server.accepted == 1
        await client.close()


# -- faults ------------------------------------------------------------------------------


async def test_connect_refused() -> None:
    client = HttpClient(connect_timeout=2)
    origin = Origin.of(f"http://127.0.0.1:{free_port()}/")[0]
    with pytest.raises(ConnectFailed) as caught:
        await client.request("POST", origin, "/", body=b"{}")
    assert caught.value.reason == "connection refused"


async def test_name_that_does_not_resolve() -> None:
    client = HttpClient(connect_timeout=5)
    origin = Origin.of("http://nexus-no-such-host.invalid/")[0]
    with pytest.raises(ConnectFailed) as caught:
        await client.request("GET", origin, "/")
    assert caught.value.reason == "no such host"


@pytest.mark.parametrize(("how", "reason"), [("fin", "EOF"), ("rst", "connection reset by peer")])
async def test_break_mid_body_raises_from_read_and_from_the_stream(how: str, reason: str) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart")
        await writer.drain()
        await asyncio.sleep(0.05)  # let the head arrive on its own
        if how == "rst":
            reset(writer)

    client = HttpClient()
    async with Loopback(cut) as server:
        response = await client.request("GET", server.origin, "/")
        with pytest.raises(ConnectionBroken) as caught:
            await response.read()
        assert caught.value.reason == reason
        streamed = await client.request("GET", server.origin, "/")
        with pytest.raises(TransportError):
            async for _ in streamed.chunks():
                pass
        assert server.accepted == 2
        await client.close()


async def test_server_closing_an_idle_pooled_connection_costs_nothing() -> None:
    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer(200, b"ok"))  # keep-alive promised, then closed while idle
        await writer.drain()

    client = HttpClient()
    async with Loopback(one_each) as server:
        assert await (await client.request("POST", server.origin, "/", body=b"1")).read() == b"ok"
        await server.closed.wait()
        await asyncio.sleep(0.05)  # the FIN reaches the client's loop
        assert await (await client.request("POST", server.origin, "/", body=b"2")).read() == b"ok"
        assert server.accepted == 2
        await client.close()


async def test_stale_connection_retried_once_for_get_never_for_post() -> None:
    async def drop_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The first connection answers once, then reads the next request and closes
        # without a byte: a server closing an idle connection just as the request came.
        first = server.accepted == 1
        await read_request(reader)
        writer.write(answer(200, b"ok"))
        await writer.drain()
        if first:
            await read_request(reader)
        else:
            await keep_alive(reader, writer)

    client = HttpClient()
    async with Loopback(drop_second) as server:
        assert await (await client.request("GET", server.origin, "/")).read() == b"ok"
        assert await (await client.request("GET", server.origin, "/")).read() == b"ok"
        assert server.accepted == 2  # retried on a fresh connection
    client2 = HttpClient()
    async with Loopback(drop_second) as server:
        await (await client2.request("POST", server.origin, "/", body=b"1")).read()
        with pytest.raises(ConnectionBroken):
            await client2.request("POST", server.origin, "/", body=b"2")
        assert server.accepted == 1  # a POST that may have run is not sent twice
    await client.close()
    await client2.close()


async def test_timeout_waiting_for_the_head_and_mid_body() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader) or (b"", b"")
        if b"/body" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
            await writer.drain()
        await wait_for_eof(reader, 10)

    client = HttpClient(read_timeout=0.3)
    async with Loopback(stall) as server:
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TransportTimeout):
            await client.request("GET", server.origin, "/head")
        assert 0.25 < loop.time() - began < 2
        response = await client.request("GET", server.origin, "/body")
        with pytest.raises(TransportTimeout):
            await response.read()
        await client.close()


async def test_malformed_response() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await wait_for_eof(reader)

    client = HttpClient()
    async with Loopback(garbage) as server:
        with pytest.raises(MalformedResponse):
            await client.request("GET", server.origin, "/")
        await client.close()


@pytest.mark.parametrize("where", ["head", "body"])
async def test_cancellation_closes_the_upstream_socket_at_once(where: str) -> None:
    saw_eof = asyncio.Event()
    started = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if where == "body":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
            await writer.drain()
        started.set()
        if await wait_for_eof(reader, 5):
            saw_eof.set()

    client = HttpClient()

    async def call(origin: Origin) -> None:
        response = await client.request("POST", origin, "/", body=b"{}")
        async for _ in response.chunks():
            pass

    async with Loopback(slow) as server:
        task = asyncio.create_task(call(server.origin))
        await started.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with asyncio.timeout(1):
            await saw_eof.wait()
        await client.close()


async def test_body_limit_closes_the_connection() -> None:
    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            if b"/declared" in request[0]:
                writer.write(answer(200, b"x" * 1000))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(10):
                    writer.write(b"64\r\n" + b"y" * 100 + b"\r\n")
                writer.write(b"0\r\n\r\n")
            await writer.drain()

    client = HttpClient()
    async with Loopback(large) as server:
        for path in ("/declared", "/chunked"):
            response = await client.request("GET", server.origin, path)
            with pytest.raises(ResponseTooLarge):
                await response.read(limit=500)
        assert server.accepted == 2  # neither connection went back to the pool
        response = await client.request("GET", server.origin, "/declared")
        assert len(await response.read(limit=1000)) == 1000
        await client.close()


async def test_abandoned_response_closes_its_connection() -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n")
        await writer.drain()
        await wait_for_eof(reader)

    client = HttpClient()
    async with Loopback(endless) as server:
        for _ in range(2):
            response = await client.request("GET", server.origin, "/")
            async for _chunk in response.chunks():
                break
        assert server.accepted == 2
        await client.close()


async def test_header_values_with_line_breaks_are_refused() -> None:
    client = HttpClient()
    origin = Origin.of("http://127.0.0.1:9/")[0]
    with pytest.raises(ValueError, match="line break"):
        await client.request("GET", origin, "/", headers=[("X-A", "a\r\nX-B: b")])
