"""Nexus extensions: SSE relay, readiness while draining, metrics and request logs."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import orjson

from tests.router.conftest import Models, RouterFactory, sequence


async def test_sse_is_relayed_chunk_by_chunk(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence({"name": "llm", "serviceUrl": models.url("/sse/5/200")}))
    started = time.monotonic()
    async with client.post(router.url, json={"stream": True}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["x-nexus-graph-step"] == "llm"
        first = await response.content.readline()
        first_at = time.monotonic() - started
        rest = await response.read()
        total = time.monotonic() - started
    assert first == b'data: {"n": 0}\n'
    assert rest.endswith(b"data: [DONE]\n\n")
    # Five events 200 ms apart: buffering would deliver the first byte after ~1 s.
    assert first_at < 0.5 < 0.9 < total, (first_at, total)


async def test_streaming_success_skips_the_conditional_fallback(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence(
        {"name": "primary", "serviceUrl": models.url("/sse/2/10")},
        {"name": "fallback", "serviceUrl": models.url("/predictions/fb"), "data": "$request",
         "condition": "error.upstream_failure"},
    ))  # fmt: skip
    async with client.post(router.url, json={"stream": True}) as response:
        assert response.headers["x-nexus-graph-step"] == "primary"
        assert (await response.read()).endswith(b"data: [DONE]\n\n")
    assert not models.calls("/predictions/fb")


async def test_stream_followed_by_an_unconditional_step_is_buffered_like_kserve(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence(
        {"serviceUrl": models.url("/sse/2/10")},
        {"name": "post", "serviceUrl": models.url("/echo/post"), "data": "$response"},
    ))  # fmt: skip
    async with client.post(router.url, json={}) as response:
        assert response.status == 200
        assert response.headers["x-nexus-graph-step"] == "post"
    assert models.calls("/echo/post")[0].body.endswith(b"data: [DONE]\n\n")


async def test_readyz_turns_503_while_draining_then_the_router_exits(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(
        sequence({"serviceUrl": models.url("/predictions/1")}), args=["--drain-seconds", "1.5"]
    )
    async with client.get(router.url + "/readyz") as response:
        assert response.status == 200
    router.process.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while True:
        async with client.get(router.url + "/readyz") as response:
            if response.status == 503:
                assert await response.text() == "shutting down\n"
                break
        assert time.monotonic() < deadline, "readiness never turned 503"
        await asyncio.sleep(0.02)
    # Still serving while draining, as KServe's router does.
    async with client.post(router.url, json={}) as response:
        assert response.status == 200
    returncode = await asyncio.to_thread(router.process.proc.wait, 10)
    assert returncode in (0, -signal.SIGTERM)


async def test_metrics_and_one_json_log_line_per_request(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence({"name": "m", "serviceUrl": models.url("/predictions/1")}))
    async with client.post(router.url + "/p", json={}, headers={"X-Request-Id": "rid-1"}) as r:
        assert r.status == 200
    async with client.get(router.url + "/metrics") as response:
        text = await response.text()
    assert 'nexus_router_requests_total{code="200"} 1.0' in text
    assert 'nexus_router_step_duration_seconds_count{step="m"} 1.0' in text
    lines = [orjson.loads(line) for line in router.process.output().splitlines()
             if line.startswith("{") and '"request_id"' in line]  # fmt: skip
    assert len(lines) == 1
    entry = lines[0]
    assert entry["request_id"] == "rid-1"
    assert (entry["method"], entry["path"], entry["status"], entry["graph_step"]) == (
        "POST", "/p", 200, "m")  # fmt: skip
    assert entry["level"] == "info"
    assert entry["duration_ms"] > 0
    assert entry["timestamp"]
