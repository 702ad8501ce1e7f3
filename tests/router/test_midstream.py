"""Faults mid-stream through the router process (issue 11).

- The upstream breaks after the first byte: a raw TCP upstream that drops a chunked SSE
  answer, and the CPU LLM process SIGKILLed while it streams. The client gets the events
  sent so far, then ``event: error`` and no ``[DONE]``; the log line and the request
  counter say 502; the router prints no traceback.
- ``routerTimeouts.serverWrite`` passes while a stream flows: ``event: error``, 504 logged.
- The client leaves: the upstream sees its connection closed at once, even while it is
  sending nothing (it waits for EOF from the router), and the log line says 499; through
  router and transformer both (one shared relay, ``nexus.edge.sse``), the predictor sees it.
- The client leaves before its body is whole: 499, no step called, no traceback.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson

from tests.router.conftest import Models, Router, RouterFactory, sequence
from tests.support.raw_sse import SSE_HEAD, chunk, raw_upstream
from tests.support.servers import Transformer, cpu_llm, transformer
from tests.transformer.conftest import BASE_ENV, KEY, chat

EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'


def _log_lines(router: Router) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in router.process.output().splitlines()
            if line.startswith("{") and '"request_id"' in line]  # fmt: skip


def _assert_no_traceback(router: Router) -> None:
    output = router.process.output()
    assert "Exception in ASGI application" not in output
    assert "Traceback" not in output


async def _metric(client: aiohttp.ClientSession, router: Router, line: str) -> bool:
    async with client.get(router.url + "/metrics") as response:
        return line in await response.text()


async def _assert_broken_stream(
    client: aiohttp.ClientSession, router: Router, body: bytes, first: bytes
) -> None:
    assert body.startswith(first), body
    assert b"[DONE]" not in body
    head, _, event = body.rpartition(b"event: error\ndata: ")
    assert head, body
    assert event.endswith(b"\n\n")
    error = orjson.loads(event)["error"]
    assert error["type"] == "upstream_error"
    assert "ended early" in error["message"]
    assert await _metric(client, router, 'nexus_router_requests_total{code="502"} 1.0')
    assert not await _metric(client, router, 'nexus_router_requests_total{code="200"}')
    (entry,) = _log_lines(router)
    assert (entry["status"], entry["stream"]) == (502, True)
    assert "ended early" in str(entry["error"])
    _assert_no_traceback(router)


async def test_upstream_dropping_a_chunked_stream_ends_with_an_error_event(
    start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(b'data: {"n": 0}\n\n') + chunk(b'data: {"n": 1'))
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.transport.abort()  # no last chunk: the body is incomplete

    async with raw_upstream(drop) as upstream:
        router = start_router(
            sequence({"name": "llm", "serviceUrl": f"http://127.0.0.1:{upstream.port}/v1"})
        )
        async with client.post(router.url, json={"stream": True}) as response:
            assert response.status == 200
            body = await response.read()
    # The half-sent event is ended before the error event, so clients parse the error.
    assert b'data: {"n": 1\n\nevent: error' in body
    await _assert_broken_stream(client, router, body, b'data: {"n": 0}\n\n')


async def test_upstream_process_killed_mid_stream_ends_with_an_error_event(
    tmp_path: Path, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    with cpu_llm(tmp_path, model="chat", args=("--token-latency-ms", "50")) as llm:
        router = start_router(
            sequence({"name": "llm", "serviceUrl": f"{llm.url}/v1/chat/completions"})
        )
        request = {"model": "chat", "stream": True, "max_tokens": 200,
                   "messages": [{"role": "user", "content": "hello"}]}  # fmt: skip
        async with client.post(router.url, json=request) as response:
            assert response.status == 200
            first = await response.content.readuntil(b"\n\n")
            llm.process.kill()
            body = first + await response.read()
    await _assert_broken_stream(client, router, body, b"data: ")


async def test_client_leaving_closes_the_upstream_connection_at_once(
    start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    closed = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(b'data: {"n": 0}\n\n'))
        await writer.drain()
        # Nothing more is sent: only the router closing its side ends this read.
        if await reader.read() == b"":
            closed.set()
        writer.close()

    async with raw_upstream(stall) as upstream:
        router = start_router(
            sequence({"name": "llm", "serviceUrl": f"http://127.0.0.1:{upstream.port}/v1"})
        )
        response = await client.post(router.url, json={"stream": True})
        assert await response.content.readuntil(b"\n\n") == b'data: {"n": 0}\n\n'
        left = time.monotonic()
        response.close()  # the client hangs up mid-stream
        await asyncio.wait_for(closed.wait(), timeout=5)
        assert time.monotonic() - left < 2
    deadline = time.monotonic() + 5
    while not _log_lines(router):
        assert time.monotonic() < deadline, "no log line for the abandoned stream"
        await asyncio.sleep(0.05)
    (entry,) = _log_lines(router)
    assert (entry["status"], entry["stream"]) == (499, True)
    assert await _metric(client, router, 'nexus_router_requests_total{code="499"} 1.0')
    _assert_no_traceback(router)


async def test_server_write_deadline_ends_a_stream_with_an_error_event(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    spec = sequence({"name": "llm", "serviceUrl": models.url("/sse/30/100")})
    spec["routerTimeouts"] = {"serverWrite": 1}
    router = start_router(spec)
    async with client.post(router.url, json={"stream": True}) as response:
        assert response.status == 200
        body = await response.read()
    assert body.startswith(b'data: {"n": 0}\n\n')
    assert b"[DONE]" not in body
    error = orjson.loads(body.rpartition(b"event: error\ndata: ")[2])["error"]
    assert error["code"] == "upstream_timeout"
    assert "serverWrite" in error["message"]
    deadline = time.monotonic() + 5
    while not _log_lines(router):
        assert time.monotonic() < deadline, "no log line for the stream"
        await asyncio.sleep(0.05)
    (entry,) = _log_lines(router)
    assert (entry["status"], entry["stream"]) == (504, True)
    assert await _metric(client, router, 'nexus_router_requests_total{code="504"} 1.0')
    _assert_no_traceback(router)


async def test_client_leaving_a_two_hop_stream_closes_the_predictor_at_once(
    tmp_path: Path, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    """Router and transformer share one relay: the departure travels both hops at once."""
    closed = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD + chunk(EVENT))
        await writer.drain()
        if await reader.read() == b"":  # only the transformer closing its side ends this
            closed.set()
        writer.close()

    async with raw_upstream(stall) as predictor:
        with transformer(tmp_path, model="chat", predictor_host=f"127.0.0.1:{predictor.port}",
                         env=BASE_ENV) as gateway:  # fmt: skip
            router = start_router(
                sequence({"name": "chat", "serviceUrl": f"{gateway.url}/v1/chat/completions"}),
                env={"PROPAGATE_HEADERS": "Authorization"},
            )
            response = await client.post(
                router.url, json=chat(stream=True), headers={"Authorization": f"Bearer {KEY}"}
            )
            assert response.status == 200
            assert await response.content.readuntil(b"\n\n") == EVENT
            left = time.monotonic()
            response.close()
            await asyncio.wait_for(closed.wait(), timeout=5)
            assert time.monotonic() - left < 2
            deadline = time.monotonic() + 5
            while not (_log_lines(router) and _gateway_lines(gateway)):
                assert time.monotonic() < deadline, "no log line for the abandoned stream"
                await asyncio.sleep(0.05)
            assert "Traceback" not in gateway.process.output()
            assert [e["status"] for e in _gateway_lines(gateway)] == [499]
    assert [(e["status"], e["stream"]) for e in _log_lines(router)] == [(499, True)]
    _assert_no_traceback(router)


async def test_client_leaving_mid_body_is_logged_499_without_a_traceback(
    start_router: RouterFactory, models: Models
) -> None:
    """The shared body reader: a client that leaves before its body is whole."""
    router = start_router(sequence({"name": "echo", "serviceUrl": models.url("/echo")}))
    _, writer = await asyncio.open_connection("127.0.0.1", router.port)
    writer.write(b'POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n{"half":')
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    deadline = time.monotonic() + 5
    while not _log_lines(router):
        assert time.monotonic() < deadline, "no log line for the abandoned request"
        await asyncio.sleep(0.05)
    assert [(e["status"], e["stream"]) for e in _log_lines(router)] == [(499, False)]
    assert models.seen == []
    _assert_no_traceback(router)


def _gateway_lines(gateway: Transformer) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in gateway.process.output().splitlines()
            if line.startswith("{") and '"request_id"' in line]  # fmt: skip
