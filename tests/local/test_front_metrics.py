"""The front reports per revision what Knative's queue-proxy reports: real HTTP on loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from nexus.local.front import Backend, Front, RevisionMetrics, front_app
from nexus.manifests.metric_names import QUEUE_PROXY_DURATION, QUEUE_PROXY_STATUS_LABEL
from tests.support.processes import free_port


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def predictor(request: web.Request) -> web.Response:
    status = 503 if request.path == "/fail" else 200
    return web.json_response({"path": request.path}, status=status)


@pytest.fixture
async def front() -> AsyncIterator[tuple[str, CollectorRegistry, Front]]:
    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", predictor)
    upstream, upstream_url = await serve(upstream_app)
    registry = CollectorRegistry()
    async with aiohttp.ClientSession() as session:
        found = Front(isvc="llama-8b", session=session, metrics=RevisionMetrics(registry),
                      rng=random.Random(7))  # fmt: skip
        found.set_backends([Backend("llama-8b-predictor-00002", upstream_url, 100)])
        runner, url = await serve(front_app(found))
        try:
            yield url, registry, found
        finally:
            await runner.cleanup()
            await upstream.cleanup()


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    """(revision, status code) -> value of the series ``name``."""
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                key = (sample.labels["revision"], sample.labels[QUEUE_PROXY_STATUS_LABEL])
                found[key] = sample.value
    return found


async def test_requests_are_counted_as_the_queue_proxy_counts_them(
    front: tuple[str, CollectorRegistry, Front],
) -> None:
    url, registry, _ = front
    async with aiohttp.ClientSession() as client:
        for path in ("/ok", "/ok", "/fail"):
            async with client.post(url + path, json={}) as response:
                assert response.headers["x-nexus-revision"] == "llama-8b-predictor-00002"

    # The name Knative 1.21's Prometheus exporter gives kn.serving.invocation.duration.
    assert QUEUE_PROXY_DURATION == "kn_serving_invocation_duration_seconds"
    assert samples(registry, f"{QUEUE_PROXY_DURATION}_count") == {
        ("llama-8b-predictor-00002", "200"): 2.0,
        ("llama-8b-predictor-00002", "503"): 1.0,
    }
    text = generate_latest(registry).decode()
    buckets = [
        line for line in text.splitlines()
        if line.startswith(f"{QUEUE_PROXY_DURATION}_bucket{{")
        and f'{QUEUE_PROXY_STATUS_LABEL}="200"' in line
    ]  # fmt: skip
    # Knative's latencyBounds (pkg/queue/request_metric.go), then +Inf.
    assert [line.split('le="')[1].split('"')[0] for line in buckets] == [
        "0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0",
        "2.5", "5.0", "7.5", "10.0", "+Inf",
    ]  # fmt: skip
    assert 'isvc="llama-8b"' in buckets[0]
    # Nothing under the pre-1.19 names, which current Knative no longer exports.
    assert "revision_app_request" not in text


async def test_an_unreachable_revision_counts_as_a_5xx_of_that_revision(
    front: tuple[str, CollectorRegistry, Front],
) -> None:
    url, registry, found = front
    dead = f"http://127.0.0.1:{free_port()}"
    found.set_backends([Backend("llama-8b-predictor-00003", dead, 100)])
    async with aiohttp.ClientSession() as client, client.post(url + "/ok", json={}) as response:
        assert response.status == 503
        assert "llama-8b-predictor-00003 is unreachable" in await response.text()
    assert samples(registry, f"{QUEUE_PROXY_DURATION}_count") == {
        ("llama-8b-predictor-00003", "503"): 1.0
    }
