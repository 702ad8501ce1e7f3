"""Faults mid-stream through the transformer process, the cases its other tests leave out.

``test_streaming.py`` covers the error event after a break and ``test_token_settlement.py``
the charge for clients that leave. Here, against a raw upstream (``tests/support/raw_sse``):
a chunked stream cut without its last chunk ends with ``event: error`` and no
``[DONE]``, its log line carries the error and the process prints no traceback; and a
client that hangs up closes the predictor connection at once, while the predictor sends
nothing (issue 11); a client that leaves before its body is whole is logged 499.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson

from tests.support.raw_sse import SSE_HEAD, chunk, raw_upstream
from tests.support.servers import Transformer, transformer
from tests.transformer.conftest import BASE_ENV, KEY, chat

AUTH = {"X-API-Key": KEY}
EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'


def _log_lines(gateway: Transformer) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in gateway.process.output().splitlines()
            if line.startswith("{") and '"request_id"' in line]  # fmt: skip


def _assert_no_traceback(gateway: Transformer) -> None:
    output = gateway.process.output()
    assert "Exception in ASGI application" not in output
    assert "Traceback" not in output


async def _wait_log(gateway: Transformer) -> dict[str, object]:
    deadline = time.monotonic() + 5
    while not (lines := _log_lines(gateway)):
        assert time.monotonic() < deadline, "no log line"
        await asyncio.sleep(0.05)
    (entry,) = lines
    return entry


async def test_predictor_dropping_a_chunked_stream_ends_with_an_error_event(
    tmp_path: Path,
) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(EVENT) + chunk(b'data: {"cho'))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()

    async with raw_upstream(drop) as upstream:
        with transformer(tmp_path, model="chat", predictor_host=f"127.0.0.1:{upstream.port}",
                         env=BASE_ENV) as gateway:  # fmt: skip
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{gateway.url}/v1/chat/completions", json=chat(stream=True), headers=AUTH
                ) as response,  # fmt: skip
            ):
                assert response.status == 200
                body = await response.read()
            entry = await _wait_log(gateway)
            _assert_no_traceback(gateway)
    assert body.startswith(EVENT)
    assert b"[DONE]" not in body
    error = orjson.loads(body.split(b"event: error\ndata: ", 1)[1])["error"]
    assert error["upstream_failure"] is True
    assert entry["error"], entry
    assert entry["status"] == 502, entry  # recorded as the failure it was, not a plain 200


async def test_client_leaving_closes_the_predictor_connection_at_once(tmp_path: Path) -> None:
    closed = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(EVENT))
        await writer.drain()
        # Nothing more is sent: only the transformer closing its side ends this read.
        if await reader.read() == b"":
            closed.set()
        writer.close()

    async with raw_upstream(stall) as upstream:
        with transformer(tmp_path, model="chat", predictor_host=f"127.0.0.1:{upstream.port}",
                         env=BASE_ENV) as gateway:  # fmt: skip
            async with aiohttp.ClientSession() as session:
                response = await session.post(
                    f"{gateway.url}/v1/chat/completions", json=chat(stream=True), headers=AUTH
                )
                assert await response.content.readuntil(b"\n\n") == EVENT
                left = time.monotonic()
                response.close()
                await asyncio.wait_for(closed.wait(), timeout=5)
                assert time.monotonic() - left < 2
            entry = await _wait_log(gateway)
            _assert_no_traceback(gateway)
    assert entry["status"] == 499


async def test_client_leaving_mid_body_is_logged_499_without_a_traceback(tmp_path: Path) -> None:
    """The shared body reader (``nexus.edge.asgi``), as the router's test does it."""
    with transformer(tmp_path, model="chat", predictor_host="127.0.0.1:9",
                     env=BASE_ENV) as gateway:  # fmt: skip
        _, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-API-Key: " + KEY.encode()
            + b'\r\nContent-Length: 100\r\n\r\n{"half":'
        )  # fmt: skip
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        entry = await _wait_log(gateway)
        _assert_no_traceback(gateway)
    assert entry["status"] == 499
