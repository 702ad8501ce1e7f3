"""Knative's tag hosts on the local front: a revision at 0 % is reachable by its tag.

KServe tags the latest revision ``latest`` (with ``serving.kserve.io/enable-tag-routing``)
and the rolled-out one ``prev`` (``ksvc_reconciler.go``); Knative serves a tag at
``<tag>-<ksvc>`` (``DefaultTagTemplate``). Real HTTP servers on loopback, and the real local
controller syncing a GitOps repository.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from nexus.local.front import Backend, Front, RevisionMetrics, front_app
from nexus.release import tag_routing
from nexus.release.evaluation import Endpoint, EvaluationSet
from nexus.release.gate import GateThresholds, GateVerdict, judge_candidate
from tests.local.conftest import ISVC, ISVC_PATH, LocalController
from tests.local.test_front_metrics import serve

LATEST = tag_routing.predictor_host("llama-8b", "nexus", "latest")
PREV = tag_routing.predictor_host("llama-8b", "nexus", "prev")
EVALUATION = EvaluationSet.from_json({"examples": [
    {"prompt": "the model answers every prompt", "reference": " with calm deterministic words",
     "checks": [{"regex": r"^[a-z]+( [a-z]+)*$"}]},
]})  # fmt: skip


def named(name: str) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"server": name, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


@pytest.fixture
async def front() -> AsyncIterator[tuple[str, Front]]:
    runners, urls = [], {}
    for name in ("transformer-1", "predictor-1", "transformer-2", "predictor-2"):
        runner, urls[name] = await serve(named(name))
        runners.append(runner)
    async with aiohttp.ClientSession() as session:
        found = Front(isvc="llama-8b", session=session,
                      metrics=RevisionMetrics(CollectorRegistry()), rng=random.Random(3))  # fmt: skip
        found.set_backends([
            Backend("llama-8b-predictor-00002", urls["transformer-2"], 0, tag="latest",
                    predictor_url=urls["predictor-2"]),
            Backend("llama-8b-predictor-00001", urls["transformer-1"], 100, tag="prev",
                    predictor_url=urls["predictor-1"]),
        ])  # fmt: skip
        runner, url = await serve(front_app(found))
        try:
            yield url, found
        finally:
            await runner.cleanup()
            for upstream in runners:
                await upstream.cleanup()


async def test_tag_hosts_reach_the_predictor_of_the_tagged_revision_even_at_zero(
    front: tuple[str, Front],
) -> None:
    url, found = front
    async with httpx.AsyncClient() as client:
        plain = [(await client.get(f"{url}/v1/models")).json()["server"] for _ in range(20)]
        latest = await client.get(f"{url}/v1/models", headers={"Host": LATEST})
        prev = await client.get(f"{url}/v1/models", headers={"Host": PREV + ":80"})
        other = await client.get(f"{url}/v1/models", headers={"Host": "latest-other-predictor"})
    assert set(plain) == {"transformer-1"}, "0 % takes no untagged traffic"
    assert latest.json() == {"server": "predictor-2", "path": "/v1/models"}
    assert latest.headers["x-nexus-revision"] == "llama-8b-predictor-00002"
    assert prev.json()["server"] == "predictor-1"
    assert other.json()["server"] == "transformer-1", "another service's tag is not ours"

    found.set_backends([Backend("llama-8b-predictor-00001", "http://127.0.0.1:9", 100)])
    async with httpx.AsyncClient() as client:
        missing = await client.get(f"{url}/v1/models", headers={"Host": LATEST})
    assert missing.status_code == 404
    assert "no ready revision of llama-8b is tagged latest" in missing.text


async def test_the_untagged_predictor_host_reaches_a_predictor_by_weight(
    front: tuple[str, Front],
) -> None:
    """``<isvc>-predictor.<ns>`` is the predictor's own route (a judge InferenceService's):
    past the transformer, to the revisions that take traffic."""
    url, found = front
    host = tag_routing.service_host("llama-8b", "nexus")
    async with httpx.AsyncClient() as client:
        seen = [await client.get(f"{url}/v1/models", headers={"Host": host}) for _ in range(10)]
    assert {r.json()["server"] for r in seen} == {"predictor-1"}, "0 % takes none of it"
    assert {r.headers["x-nexus-revision"] for r in seen} == {"llama-8b-predictor-00001"}

    found.set_backends([Backend("llama-8b-predictor-00001", "http://127.0.0.1:9", 100)])
    async with httpx.AsyncClient() as client:
        starting = await client.get(f"{url}/v1/models", headers={"Host": host})
    assert starting.status_code == 503
    assert "the predictor of llama-8b-predictor-00001 has no port yet" in starting.text


def test_parse_host_reads_knatives_tag_template() -> None:
    assert LATEST == "latest-llama-8b-predictor.nexus.svc.cluster.local"
    assert tag_routing.parse_host("LATEST-llama-8b-predictor.nexus:8080", "llama-8b") == "latest"
    assert tag_routing.parse_host("llama-8b-predictor.nexus", "llama-8b") is None
    assert tag_routing.parse_host("latest-llama-8b.nexus", "llama-8b") is None
    assert tag_routing.service_host("judge", "nexus") == "judge-predictor.nexus.svc.cluster.local"
    assert tag_routing.names_predictor("Judge-predictor.nexus:80", "judge")
    assert not tag_routing.names_predictor("latest-judge-predictor.nexus", "judge")


def test_the_gate_reaches_candidates_at_zero_through_the_tag_hosts(
    controller: LocalController,
) -> None:
    """An intact candidate at 0 % passes the gate, a garbled one (the CPU worker's ``GARBLE``
    from the predictor's env, as its pod would get it) is blocked; neither takes traffic."""
    controller.ready_revision("00001")
    front = f"http://127.0.0.1:{controller.port(f'front-{ISVC}')}"
    hosts = {tag: tag_routing.predictor_host(ISVC, "nexus", tag) for tag in tag_routing.TAGS}

    def judge() -> GateVerdict:
        endpoints = {tag: Endpoint(f"{front}/v1", ISVC, host=host) for tag, host in hosts.items()}
        return judge_candidate(candidate=endpoints["latest"], champion=endpoints["prev"],
                               evaluation=EVALUATION, thresholds=GateThresholds())  # fmt: skip

    body = controller.read(ISVC_PATH)
    body["metadata"]["annotations"][tag_routing.ANNOTATION] = "true"
    body["spec"]["predictor"]["canaryTrafficPercent"] = 0
    env = body["spec"]["predictor"]["containers"][0]["env"]
    for number, extra in (("00002", {"name": "REV", "value": "2"}),
                          ("00003", {"name": "NEXUS_WORKER_GARBLE", "value": "1"})):  # fmt: skip
        env.append(extra)
        assert controller.push(ISVC_PATH, body, f"Candidate {number} at 0 %").returncode == 0
        candidate = f"{ISVC}-predictor-{number}"

        def latest_ready(candidate: str = candidate) -> bool:
            predictor = controller.isvc()["status"]["components"]["predictor"]
            return bool(predictor.get("latestReadyRevision") == candidate)

        controller.wait(latest_ready, f"the candidate {number} at 0 % ready")
        tagged = httpx.get(f"{front}/v1/models", headers={"Host": hosts["latest"]}, timeout=10)
        assert tagged.headers["x-nexus-revision"] == candidate
        plain = httpx.get(f"{front}/v1/models", timeout=10)
        assert plain.headers.get("x-nexus-revision") == f"{ISVC}-predictor-00001"
        verdict = judge()
        if number == "00002":
            assert verdict.passed, verdict.reasons
        else:
            assert not verdict.passed
            assert verdict.reasons[0].startswith("likelihood:")
