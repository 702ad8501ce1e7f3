"""A canned-answer HTTP/1.1 upstream cheap enough that the router in front of it is the bottleneck.

``tests/support/cpu_llm.py`` is an aiohttp application: on a 2-core machine it tops out below
the router's throughput target, so the router's own figures would be the upstream's.
This server answers every POST with one fixed OpenAI chat completion from an asyncio
protocol (uvloop + httptools, both already dependencies), keep-alive, no routing, no
parsing of the body: a stand-in for an upstream infinitely faster than a model.

    python -m bench.fast_upstream --port 9100
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import orjson
import uvloop

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "chat",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "a canned answer for benchmarks"},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 8, "total_tokens": 9},
    }
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: " + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER
)
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class CannedHttp(asyncio.Protocol):
    """One connection: every complete request gets the canned answer, in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.replies: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport does not subclass asyncio.Transport; cast, do not assert.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()
            return
        if self.replies and self.transport is not None:
            # Pipelined requests in one read get one write, as a real server would batch.
            self.transport.write(b"".join(self.replies))
            self.replies.clear()

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        self.replies.append(HEALTH if method == b"GET" else RESPONSE)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CannedHttp, host, port, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
