"""The shipped graphs: valid against the InferenceGraph CRD, and runnable as they are."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml

from nexus.manifests.bundle import Bundle
from tests.router.conftest import Models, RouterFactory

REPO = Path(__file__).resolve().parents[2]
GRAPHS = sorted((REPO / "graphs").glob("*.yaml"))
CLUSTER_HOSTS = ("llama-8b", "qwen-1-5b", "mistral-7b")


def strict(schema: Any) -> Any:
    """Reject unknown fields like ``kubectl --validate=strict`` (typos such as serviceURL)."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    # The InferenceGraph schema `nexus lint` ships (generated from KServe's CRD).
    schema = Bundle.load().schemas("serving.kserve.io", "InferenceGraph")["v1alpha1"]
    return jsonschema.Draft7Validator(strict(schema))


def test_the_three_graphs_are_shipped() -> None:
    assert {g.name for g in GRAPHS} >= {
        "inferencegraph.chat-fallback.yaml",
        "inferencegraph.chat-split.yaml",
        "inferencegraph.chat-split-fallback.yaml",
    }


@pytest.mark.parametrize("path", GRAPHS, ids=lambda p: p.name)
def test_graph_validates_against_the_crd(path: Path, validator: jsonschema.Draft7Validator) -> None:
    resource = yaml.safe_load(path.read_text())
    assert resource["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert resource["kind"] == "InferenceGraph"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(resource)]
    assert not errors


def test_the_validation_catches_bad_graphs(validator: jsonschema.Draft7Validator) -> None:
    resource = yaml.safe_load(GRAPHS[0].read_text())
    wrong_type = copy.deepcopy(resource)
    wrong_type["spec"]["nodes"]["root"]["routerType"] = "Broadcast"
    typo = copy.deepcopy(resource)
    typo["spec"]["nodes"]["root"]["steps"][0]["serviceURL"] = "http://x"
    assert not validator.is_valid(wrong_type)
    assert not validator.is_valid(typo)


def host_map(models: Models) -> list[str]:
    pairs = (f"{name}.nexus.svc.cluster.local=127.0.0.1:{models.port}" for name in CLUSTER_HOSTS)
    return [arg for pair in pairs for arg in ("--host-map", pair)]


async def test_fallback_graph_runs_unchanged(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(
        graph_file=REPO / "graphs" / "inferencegraph.chat-fallback.yaml", args=host_map(models)
    )
    request = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    async with client.post(router.url + "/openai/v1/chat/completions", json=request) as response:
        assert response.status == 200
        assert (await response.json())["model"] == "llama-8b"
    models.failing.add("llama-8b")
    async with client.post(router.url, json=request) as response:
        assert response.status == 200
        assert response.headers["x-nexus-graph-step"] == "qwen-1-5b"
        assert (await response.json())["model"] == "qwen-1-5b"
    fallback_call = models.seen[-1]
    assert fallback_call.headers["Host"] == "qwen-1-5b.nexus.svc.cluster.local"
    assert fallback_call.json() == request  # data: $request


async def test_split_graph_runs_unchanged(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(
        graph_file=REPO / "graphs" / "inferencegraph.chat-split.yaml", args=host_map(models)
    )

    async def one() -> str:
        async with client.post(router.url, json={"messages": []}) as response:
            assert response.status == 200
            return str((await response.json())["model"])

    answers = await asyncio.gather(*(one() for _ in range(200)))
    # Binomial(200, 0.8): mean 160, sd 5.7; ±5 sd.
    assert 131 <= answers.count("llama-8b") <= 189
    assert answers.count("llama-8b") + answers.count("mistral-7b") == 200


async def test_split_fallback_graph_falls_back_from_whichever_model_was_drawn(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(
        graph_file=REPO / "graphs" / "inferencegraph.chat-split-fallback.yaml",
        args=host_map(models),
    )
    models.failing.update({"llama-8b", "mistral-7b"})
    for _ in range(20):
        async with client.post(router.url, json={"messages": []}) as response:
            assert response.status == 200
            assert (await response.json())["model"] == "qwen-1-5b"
    async with client.get(router.url + "/metrics") as response:
        metrics = await response.text()
    counted = [line for line in metrics.splitlines()
               if line.startswith("nexus_router_fallbacks_total{")]  # fmt: skip
    assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) == 20
    assert all('to_model="qwen-1-5b"' in line for line in counted)
    assert {line.split('from_model="')[1].split('"')[0] for line in counted} <= {
        "llama-8b", "mistral-7b"}  # fmt: skip
