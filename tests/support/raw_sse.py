"""A raw TCP upstream that starts a chunked SSE answer and then misbehaves as a test says.

aiohttp's server always finishes its chunked body on a handler error, so a stream cut
without its last chunk (what a killed process or a reset connection looks like to the
client) needs a server that writes HTTP/1.1 by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawUpstream:
    """A TCP server speaking just enough HTTP/1.1 to start an SSE answer, then misbehave."""

    port: int = 0


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))


@contextlib.asynccontextmanager
async def raw_upstream(behaviour: Behaviour) -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await behaviour(reader, writer)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    try:
        yield upstream
    finally:
        server.close()
