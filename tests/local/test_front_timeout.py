"""The front enforces the entry component's timeout as Knative's queue-proxy does.

Knative (``pkg/http/handler/timeout.go``, knative-v1.21.0): a total timer from the
request's arrival; before the answer starts, 504 with body ``request timeout``; after it
started, the same text is written into the answer and the answer ends, streams included.
Real HTTP servers on loopback; the upstream is slow on purpose.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from nexus.local.admission import request_timeout
from nexus.local.front import DEFAULT_TIMEOUT_SECONDS, Backend, Front, RevisionMetrics, front_app
from tests.local.conftest import API_KEY, ISVC, ISVC_PATH, LocalController
from tests.local.test_front_metrics import serve

TIMEOUT = 0.6


async def slow(request: web.Request) -> web.StreamResponse:
    if request.path == "/fast":
        return web.json_response({"ok": True})
    if request.path == "/late":  # the answer starts after the timeout
        await asyncio.sleep(3)
        return web.json_response({"ok": True})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for n in range(30):  # a stream of 3 s, one event every 0.1 s
        await response.write(f"data: {n}\n\n".encode())
        await asyncio.sleep(0.1)
    await response.write_eof()
    return response


@pytest.fixture
async def front_url() -> AsyncIterator[str]:
    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", slow)
    upstream, upstream_url = await serve(upstream_app)
    async with aiohttp.ClientSession() as session:
        front = Front(isvc="llama-8b", session=session,
                      metrics=RevisionMetrics(CollectorRegistry()), rng=random.Random(1))  # fmt: skip
        front.set_backends([Backend("llama-8b-predictor-00001", upstream_url, 100)],
                           timeout=TIMEOUT)  # fmt: skip
        runner, url = await serve(front_app(front))
        try:
            yield url
        finally:
            await runner.cleanup()
            await upstream.cleanup()


async def timed(url: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as client, client.post(url, json={}) as response:
        body = await response.read()
    return response.status, body, time.perf_counter() - started


async def test_an_answer_that_has_not_started_gets_504_request_timeout(front_url: str) -> None:
    status, body, elapsed = await timed(front_url + "/late")
    assert (status, body) == (504, b"request timeout")
    assert TIMEOUT <= elapsed < 2.0


async def test_a_stream_is_cut_at_the_timeout_with_the_queue_proxy_text(front_url: str) -> None:
    status, body, elapsed = await timed(front_url + "/stream")
    assert status == 200
    assert body.startswith(b"data: 0\n\n")
    assert body.endswith(b"request timeout")
    assert b"data: 29" not in body
    assert TIMEOUT <= elapsed < 2.0


async def test_answers_within_the_timeout_pass_unchanged(front_url: str) -> None:
    status, body, _ = await timed(front_url + "/fast")
    assert (status, body) == (200, b'{"ok": true}')


VERSIONS = {"kserve": "0.21.0"}


def isvc(mode: str | None = None, **components: dict[str, Any]) -> dict[str, Any]:
    annotations = {"serving.kserve.io/deploymentMode": mode} if mode else {}
    return {"metadata": {"annotations": annotations}, "spec": {"predictor": {}, **components}}


def test_the_timeout_is_the_entry_components_else_knatives_default() -> None:
    assert DEFAULT_TIMEOUT_SECONDS == 300  # revision-timeout-seconds, config-defaults
    assert request_timeout(isvc(), VERSIONS) == 300
    assert request_timeout(isvc(predictor={"timeout": 45}), VERSIONS) == 45
    # The transformer is what the InferenceService's host routes to.
    both = isvc("Serverless", transformer={"timeout": 600, "containers": [{}]})
    both["spec"]["predictor"]["timeout"] = 30
    assert request_timeout(both, VERSIONS) == 600
    # Standard mode has no queue-proxy, hence no such timer.
    assert request_timeout(isvc("RawDeployment", predictor={"timeout": 45}), VERSIONS) is None


def test_the_controller_gives_the_front_the_transformers_timeout(
    controller: LocalController,
) -> None:
    """``spec.transformer.timeout: 2`` in Git: a slow stream through the real platform ends
    at 2 s with the queue-proxy's text, where Knative's default would allow 300 s."""
    controller.ready_revision("00001")
    body = controller.read(ISVC_PATH)
    body["spec"]["transformer"]["timeout"] = 2
    assert controller.push(ISVC_PATH, body, "Transformer timeout 2 s").returncode == 0
    head = controller.head()
    controller.wait(lambda: controller.application()["status"]["sync"]["revision"] == head,
                    "the timeout commit synced")  # fmt: skip
    worker = controller.port(f"{ISVC}-predictor-00001")
    faults = {"token_latency_ms": 300.0}
    httpx.post(f"http://127.0.0.1:{worker}/admin/faults", json=faults).raise_for_status()
    chat = {"model": ISVC, "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 40, "stream": True}  # fmt: skip
    started = time.perf_counter()
    response = httpx.post(controller.isvc()["status"]["url"] + "/openai/v1/chat/completions",
                          json=chat, headers={"Authorization": f"Bearer {API_KEY}"},
                          timeout=30)  # fmt: skip
    elapsed = time.perf_counter() - started
    assert response.status_code == 200
    assert response.content.startswith(b"data: ")
    assert response.content.endswith(b"request timeout")
    assert b"[DONE]" not in response.content
    assert 2.0 <= elapsed < 6.0  # 40 tokens at 0.3 s would take 12 s
