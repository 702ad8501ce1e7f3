"""Unit tests of the pure parts: graph parsing, GJSON conditions, header rules, Go shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.errors import ConfigError
from nexus.router.calls import parse_host_map
from nexus.router.executor import map_predictions_to_instances
from nexus.router.graph import load_graph_file, load_graph_json, parse_spec
from nexus.router.headers import HeaderPropagation, canonical_header_name, compile_patterns
from nexus.router.reply import condition_holds, go_json, sniff_content_type

REPO = Path(__file__).resolve().parents[2]


def step(**fields: object) -> dict[str, object]:
    return {"serviceUrl": "http://m/v1/models/m:predict", **fields}


def test_parse_spec_defaults_and_labels() -> None:
    graph = parse_spec({"nodes": {"root": {"routerType": "Sequence", "steps": [
        step(name="a"), step(), {"nodeName": "root"}]}}})  # fmt: skip
    first, second, third = graph.root.steps
    assert first.dependency == "Soft"
    assert (first.key, second.key) == ("a", "1")
    assert (first.label, second.label, third.label) == ("a", "step-1", "root")
    assert graph.timeouts.service_client is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nodes": {"other": {"routerType": "Sequence", "steps": [step()]}}}, "entry node"),
        (
            {"nodes": {"root": {"routerType": "Sequence", "steps": [{"nodeName": "x"}]}}},
            "not a node",
        ),
        (
            {"nodes": {"root": {"routerType": "Sequence", "steps": [{"name": "none"}]}}},
            "exactly one",
        ),
        (
            {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceName": "isvc"}]}}},
            "serviceName",
        ),
        (
            {"nodes": {"root": {"routerType": "Sequence", "steps": [step(dependency="Maybe")]}}},
            "Soft or Hard",
        ),
        ({"nodes": {"root": {"steps": [step()]}}}, "routerType"),
        (
            {
                "nodes": {"root": {"routerType": "Sequence", "steps": [step()]}},
                "routerTimeouts": {"serviceClient": "10s"},
            },
            "serviceClient",
        ),
    ],
)
def test_parse_spec_rejects_graphs_that_cannot_run(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec)


def test_graph_json_and_graph_file() -> None:
    graph = load_graph_json('{"nodes": {"root": {"routerType": "Switch", "steps": []}},'
                            ' "routerTimeouts": {"serviceClient": 5}}')  # fmt: skip
    assert graph.timeouts.service_client == 5
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_graph_json("{")
    shipped = load_graph_file(REPO / "graphs" / "inferencegraph.chat-fallback.yaml")
    assert shipped.name == "chat-fallback"
    assert [s.name for s in shipped.root.steps] == ["llama-8b", "qwen-1-5b"]


@pytest.mark.parametrize(
    ("condition", "body", "holds"),
    [
        ('predictions.#(label=="dog")', b'{"predictions":[{"label":"cat"},{"label":"dog"}]}', True),
        ('predictions.#(label=="dog")', b'{"predictions":[{"label":"cat"}]}', False),
        ("[@this].#(error.upstream_failure==true)", b'{"error":{"upstream_failure":true}}', True),
        ("[@this].#(error.upstream_failure==true)", b'{"error":{"upstream_failure":false}}', False),
        ("error.upstream_failure", b'{"error":{"upstream_failure":true}}', True),
        ("error.upstream_failure", b'{"error":{"type":"authentication_error"}}', False),
        ("a", b'{"a":null}', True),  # GJSON: a null value exists
        ('instances.#(modelId=="2")', b'{"instances":[{"modelId":"2"}]}', True),
    ],
)
def test_conditions_use_real_gjson(condition: str, body: bytes, holds: bool) -> None:
    spec = {"nodes": {"root": {"routerType": "Switch", "steps": [step(condition=condition)]}}}
    assert condition_holds(parse_spec(spec).root.steps[0], body) is holds


def test_a_step_without_condition_never_holds() -> None:
    graph = parse_spec({"nodes": {"root": {"routerType": "Switch", "steps": [step()]}}})
    assert not condition_holds(graph.root.steps[0], b'{"a": 1}')


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (b"x-api-key", "X-Api-Key"),
        (b"authorization", "Authorization"),
        (b"TRACEPARENT", "Traceparent"),
        (b"x-b3-traceid", "X-B3-Traceid"),
        (b"bad header", "bad header"),
    ],
)
def test_canonical_header_names_follow_go(raw: bytes, canonical: str) -> None:
    assert canonical_header_name(raw) == canonical


def test_propagation_selects_by_unanchored_pattern_and_skips_framing() -> None:
    propagation = HeaderPropagation(compile_patterns("Auth,^X-Request-Id$,[bad,.*-Length"))
    selected = propagation.select([
        (b"authorization", b"Bearer k"), (b"x-auth-token", b"t"), (b"x-request-id", b"r"),
        (b"x-request-id-extra", b"no"), (b"content-length", b"2"), (b"host", b"h"),
    ])  # fmt: skip
    assert selected == [("Authorization", "Bearer k"), ("X-Auth-Token", "t"), ("X-Request-Id", "r")]
    assert HeaderPropagation(()).select([(b"authorization", b"x")]) == []


def test_map_predictions_to_instances() -> None:
    assert (
        map_predictions_to_instances(b'{"predictions": [1], "k": 2}') == b'{"k":2,"instances":[1]}'
    )
    assert map_predictions_to_instances(b'{"instances": [1]}') == b'{"instances": [1]}'
    assert map_predictions_to_instances(b'"predictions"') == b'"predictions"'


def test_go_json_sorts_keys_and_escapes_html() -> None:
    assert go_json({"b": 1, "a": "<&>"}) == b'{"a":"\\u003c\\u0026\\u003e","b":1}'


def test_sniffed_content_types() -> None:
    assert sniff_content_type(b"") is None
    assert sniff_content_type(b"hello") == b"text/plain; charset=utf-8"
    assert sniff_content_type(b"<html><body>") == b"text/html; charset=utf-8"
    assert sniff_content_type(b"\x00\x01binary") == b"application/octet-stream"


def test_host_map_parsing() -> None:
    assert parse_host_map(["A.svc.cluster.local=127.0.0.1:9000"]) == {
        "a.svc.cluster.local": "127.0.0.1:9000"}  # fmt: skip
    with pytest.raises(ValueError, match="name=host:port"):
        parse_host_map(["nohost"])
