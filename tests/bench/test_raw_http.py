"""The lean floor's client (``bench/raw_http.py``) against real loopback servers.

A floor that quietly opened a connection per request, reused a connection the upstream
closed, or hung on a broken answer would make every ratio against it wrong.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from bench.raw_http import Pool

ANSWER = b'{"choices":[{"index":0}]}'
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


class Upstream:
    """A loopback HTTP/1.1 server that counts its connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def start(self, handler: Handler) -> asyncio.Server:
        async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(counted, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server


async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            body = await read_request(reader)
        except asyncio.IncompleteReadError:
            return
        assert body == b'{"n":1}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER))
        await writer.drain()


async def close_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
                 b"Content-Length: 4\r\n\r\nbusy")  # fmt: skip
    await writer.drain()


async def break_mid_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"cho')
    await writer.drain()


async def test_sequential_posts_reuse_one_connection() -> None:
    upstream = Upstream()
    async with await upstream.start(keep_alive):
        pool = Pool("127.0.0.1", upstream.port)
        answers = [await pool.post("/v1/chat/completions", b'{"n":1}') for _ in range(5)]
        pool.close()
    assert answers == [(200, ANSWER)] * 5
    assert upstream.connections == 1


async def test_concurrent_posts_open_one_connection_each() -> None:
    upstream = Upstream()
    async with await upstream.start(keep_alive):
        pool = Pool("127.0.0.1", upstream.port)
        posts = [pool.post("/v1/chat/completions", b'{"n":1}') for _ in range(4)]
        answers = await asyncio.gather(*posts)
        assert len(pool.idle) == 4
        pool.close()
    assert answers == [(200, ANSWER)] * 4
    assert upstream.connections == 4


async def test_a_connection_the_upstream_closes_is_not_reused() -> None:
    upstream = Upstream()
    async with await upstream.start(close_after_answer):
        pool = Pool("127.0.0.1", upstream.port)
        first = await pool.post("/", b"{}")
        second = await pool.post("/", b"{}")
        assert pool.idle == []
    assert first == second == (503, b"busy")
    assert upstream.connections == 2


async def test_an_answer_cut_short_raises_instead_of_hanging() -> None:
    upstream = Upstream()
    async with await upstream.start(break_mid_answer):
        pool = Pool("127.0.0.1", upstream.port)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(pool.post("/", b"{}"), timeout=5)
        assert pool.idle == []
