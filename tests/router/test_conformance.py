"""KServe router behaviour, case by case, against the router process and real upstreams.

Each case mirrors a behaviour of KServe's ``cmd/router`` (its unit tests or its code
paths); the test name says which. Every router here runs the ``kserve`` status policy
(the image's default is ``client``: ``tests/router/test_status_policy.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import orjson
import pytest

from tests.router.conftest import Models, Router, RouterFactory, sequence


@pytest.fixture
def start_router(start_router: RouterFactory) -> RouterFactory:
    """The shared factory, with KServe's exact status semantics."""

    def start(
        spec: Mapping[str, Any] | None = None, *, args: Sequence[str] = (), **kwargs: Any
    ) -> Router:
        return start_router(spec, args=["--status-policy", "kserve", *args], **kwargs)

    return start


FAILED = "Failed to process request"


async def test_chain_passes_the_previous_response_to_the_next_step(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence(
        {"name": "model1", "serviceUrl": models.url("/predictions/1")},
        {"name": "model2", "serviceUrl": models.url("/echo/model2"), "data": "$response"},
    ))  # fmt: skip
    async with client.post(router.url, json={"instances": ["test"]}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["x-nexus-graph-step"] == "model2"
        assert await response.json() == {"predictions": "1"}
    assert models.calls("/predictions/1")[0].json() == {"instances": ["test"]}
    assert models.calls("/echo/model2")[0].json() == {"predictions": "1"}


async def test_data_other_than_response_sends_the_original_request(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence(
        {"serviceUrl": models.url("/predictions/1")},
        {"serviceUrl": models.url("/echo/second"), "data": "$request"},
    ))  # fmt: skip
    async with client.post(router.url, data=b'{"instances": [7]}') as response:
        assert await response.json() == {"instances": [7]}


async def test_map_predictions_to_instances_renames_the_step_input(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence(
        {"name": "m1", "serviceUrl": models.url("/echo/m1"), "mapPredictionsToInstances": True},
        {"name": "m2", "serviceUrl": models.url("/echo/m2"), "data": "$response"},
    ))  # fmt: skip
    async with client.post(router.url, json={"predictions": ["a"], "id": 3}) as response:
        assert response.status == 200
    assert models.calls("/echo/m1")[0].json() == {"instances": ["a"], "id": 3}
    assert models.calls("/echo/m2")[0].json() == {"instances": ["a"], "id": 3}


async def test_ensemble_merges_step_objects_by_name_or_index(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    spec = {"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "model2", "serviceUrl": models.url("/predictions/2")},
        {"serviceUrl": models.url("/status/500")},
        {"name": "model1", "serviceUrl": models.url("/predictions/1")},
    ]}}}  # fmt: skip
    router = start_router(spec)
    async with client.post(router.url, json={"instances": []}) as response:
        assert response.status == 200
        body = await response.read()
    # Go marshals maps with sorted keys; a Soft failing step is merged like any other.
    assert body == b'{"1":{"error":"status 500"},"model1":{"predictions":"1"},' \
                   b'"model2":{"predictions":"2"}}'  # fmt: skip


async def test_ensemble_hard_failure_decides_status_and_body(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    spec = {"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "ok", "serviceUrl": models.url("/predictions/1")},
        {"name": "broken", "serviceUrl": models.url("/status/503"), "dependency": "Hard"},
    ]}}}  # fmt: skip
    router = start_router(spec)
    async with client.post(router.url, json={}) as response:
        assert response.status == 503
        assert await response.json() == {"error": "status 503"}


async def test_ensemble_step_that_is_not_a_json_object_fails_the_node(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    spec = {"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "ok", "serviceUrl": models.url("/predictions/1")},
        {"name": "list", "serviceUrl": models.url("/array")},
    ]}}}  # fmt: skip
    router = start_router(spec)
    async with client.post(router.url, json={}) as response:
        assert response.status == 500
        assert await response.json() == {
            "error": FAILED,
            "cause": "json: cannot unmarshal array into Go value of type map[string]interface {}",
        }


async def test_nested_switch_then_conditional_ensemble(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    """KServe's TestInferenceGraphWithCondition: Switch picks by request, Sequence gates."""
    spec = sequence(
        {"name": "step1", "nodeName": "animal-categorize"},
        {"name": "step2", "nodeName": "breed-categorize",
         "condition": 'predictions.#(label=="dog")'},
        **{
            "animal-categorize": {"routerType": "Switch", "steps": [
                {"name": "model1", "serviceUrl": models.url("/label/cat"),
                 "condition": 'instances.#(modelId=="1")'},
                {"name": "model2", "serviceUrl": models.url("/label/dog"),
                 "condition": 'instances.#(modelId=="2")'},
            ]},
            "breed-categorize": {"routerType": "Ensemble", "steps": [
                {"name": "model3", "serviceUrl": models.url("/label/beagle")},
                {"name": "model4", "serviceUrl": models.url("/label/poodle")},
            ]},
        },
    )  # fmt: skip
    router = start_router(spec)
    async with client.post(router.url, json={"instances": [{"modelId": "2"}]}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["model3"]["predictions"][0]["label"] == "beagle"
    assert body["model4"]["predictions"][0]["label"] == "poodle"
    assert not models.calls("/label/cat")
    # modelId 1 → cat → the breed condition does not hold: cat's answer, 200.
    async with client.post(router.url, json={"instances": [{"modelId": "1"}]}) as response:
        assert response.status == 200
        assert (await response.json())["predictions"][0]["label"] == "cat"
        assert response.headers["x-nexus-graph-step"] == "model1"


async def test_unmet_condition_returns_previous_body_with_200_even_after_failure(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    """KServe quirk: a skipped conditional step turns the previous status into 200."""
    router = start_router(sequence(
        {"name": "primary", "serviceUrl": models.url("/status/401")},
        {"name": "fallback", "serviceUrl": models.url("/predictions/fb"),
         "condition": "error.upstream_failure"},
    ))  # fmt: skip
    async with client.post(router.url, json={}) as response:
        assert response.status == 200
        assert await response.json() == {"error": "status 401"}
    assert not models.calls("/predictions/fb")


async def test_condition_on_previous_failure_body_runs_the_fallback(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence(
        {"name": "primary", "serviceUrl": models.url("/upstream-failure")},
        {"name": "fallback", "serviceUrl": models.url("/echo/fallback"), "data": "$request",
         "condition": "[@this].#(error.upstream_failure==true)"},
    ))  # fmt: skip
    async with client.post(router.url, json={"messages": ["hi"]}) as response:
        assert response.status == 200
        assert response.headers["x-nexus-graph-step"] == "fallback"
        assert await response.json() == {"messages": ["hi"]}
    async with client.get(router.url + "/metrics") as response:
        metrics = await response.text()
    assert 'nexus_router_fallbacks_total{from_model="primary",to_model="fallback"} 1.0' in metrics
    assert 'nexus_router_step_responses_total{code="502",step="primary"} 1.0' in metrics


async def test_condition_on_the_first_step_or_after_non_json_is_invalid_response(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    first = start_router(sequence(
        {"serviceUrl": models.url("/predictions/1"), "condition": "instances"},
    ))  # fmt: skip
    after_text = start_router(sequence(
        {"serviceUrl": models.url("/text")},
        {"serviceUrl": models.url("/predictions/2"), "condition": "anything"},
    ))  # fmt: skip
    for router in (first, after_text):
        async with client.post(router.url, json={"instances": [1]}) as response:
            assert response.status == 500
            assert await response.json() == {"error": FAILED, "cause": "invalid response"}


async def test_hard_failure_stops_the_sequence_soft_failure_continues(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    hard = start_router(sequence(
        {"serviceUrl": models.url("/status/503"), "dependency": "Hard"},
        {"serviceUrl": models.url("/predictions/never")},
    ))  # fmt: skip
    soft = start_router(sequence(
        {"serviceUrl": models.url("/status/500")},
        {"serviceUrl": models.url("/predictions/after"), "data": "$response"},
    ))  # fmt: skip
    async with client.post(hard.url, json={}) as response:
        assert response.status == 503
        assert await response.json() == {"error": "status 503"}
    assert not models.calls("/predictions/never")
    async with client.post(soft.url, json={}) as response:
        assert response.status == 200
        assert await response.json() == {"predictions": "after"}
    assert models.calls("/predictions/after")[0].json() == {"error": "status 500"}


async def test_last_step_status_is_returned_as_it_is(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence({"serviceUrl": models.url("/status/429")}))
    async with client.post(router.url, json={}) as response:
        assert response.status == 429
        assert await response.json() == {"error": "status 429"}


async def test_transport_error_is_a_500_with_go_style_cause(
    start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    from tests.support.processes import free_port

    url = f"http://127.0.0.1:{free_port()}/v1/models/m:predict"
    router = start_router(sequence({"name": "gone", "serviceUrl": url}))
    async with client.post(router.url, json={}) as response:
        assert response.status == 500
        assert response.headers["Content-Type"] == "application/json"
        body = await response.json()
    assert body["error"] == FAILED
    assert body["cause"].startswith(f'Post "{url}": dial tcp 127.0.0.1:')
    assert body["cause"].endswith("connect: connection refused")


async def test_switch_without_match_is_404_at_root_and_500_when_nested(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    switch = {"routerType": "Switch", "steps": [
        {"serviceUrl": models.url("/predictions/a"), "condition": 'instances.#(modelId=="a")'},
    ]}  # fmt: skip
    root = start_router({"nodes": {"root": switch}})
    nested = start_router(sequence({"nodeName": "pick"}, pick=switch))
    cause = "None of the routes matched with the switch condition"
    async with client.post(root.url, json={"instances": [{"modelId": "b"}]}) as response:
        assert response.status == 404
        assert await response.json() == {"error": FAILED, "cause": cause}
    async with client.post(root.url, data=b"not json") as response:
        assert response.status == 404
    async with client.post(nested.url, json={"instances": [{"modelId": "b"}]}) as response:
        assert response.status == 500
        assert await response.json() == {"error": FAILED, "cause": cause}
    async with client.post(root.url, json={"instances": [{"modelId": "a"}]}) as response:
        assert response.status == 200
        assert await response.json() == {"predictions": "a"}


async def test_non_json_body_passes_through_with_a_sniffed_content_type(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router(sequence({"serviceUrl": models.url("/text")}))
    async with client.post(router.url, data=b"raw") as response:
        assert response.status == 202
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert await response.read() == b"plain words, not json"
    # Outgoing: Content-Type application/json is added when the client's is not propagated.
    assert models.calls("/text")[0].headers["Content-Type"] == "application/json"


async def test_every_path_and_method_is_the_graph_entry(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    # KServe's behaviour is kept behind --any-method (the default answers 405, issue 11).
    router = start_router(sequence({"serviceUrl": models.url("/echo")}), args=["--any-method"])
    async with client.get(router.url + "/v1/anything?x=1", data=b'{"a": 1}') as response:
        assert response.status == 200
        assert await response.json() == {"a": 1}
    async with client.put(router.url + "/openai/v1/chat/completions", data=b"{}") as response:
        assert response.status == 200
    assert [seen.path for seen in models.seen] == ["/echo", "/echo"]


async def test_service_client_timeout_bounds_each_step(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    spec = sequence({"serviceUrl": models.url("/slow/1500")})
    spec["routerTimeouts"] = {"serviceClient": 1}
    router = start_router(spec)
    async with client.post(router.url, json={}) as response:
        assert response.status == 500
        body = await response.json()
    assert body["error"] == FAILED
    assert "Client.Timeout exceeded" in body["cause"]
    quick = sequence({"serviceUrl": models.url("/slow/100")})
    quick["routerTimeouts"] = {"serviceClient": 1}
    router = start_router(quick)
    async with client.post(router.url, json={}) as response:
        assert response.status == 200


async def test_unknown_router_type_is_an_invalid_route_type_error(
    models: Models, start_router: RouterFactory, client: aiohttp.ClientSession
) -> None:
    router = start_router({"nodes": {"root": {"routerType": "Broadcast", "steps": [
        {"serviceUrl": models.url("/echo")}]}}})  # fmt: skip
    async with client.post(router.url, json={}) as response:
        assert response.status == 500
        assert orjson.loads(await response.read())["cause"] == "invalid route type: Broadcast"
