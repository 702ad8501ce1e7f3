"""Properties of JSON handling and GJSON conditions (nesting guard, graph parsing, conditions).

The nesting guard is what keeps GJSON's recursive parser away from deep input; if it ever
measured less than the real depth, the SIGSEGV of issue 12 would be back.
"""

from __future__ import annotations

from typing import Any

import orjson
import pygjson
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from nexus.edge.nesting import DEFAULT_MAX_NESTING, nesting_depth
from nexus.errors import ConfigError
from nexus.router.graph import parse_spec
from nexus.router.reply import GraphError, condition_holds, json_valid, request_json_valid
from tests.fuzz.strategies import depth_of, json_bytes, json_values, nested_text

conditions = st.text(max_size=40) | st.sampled_from(
    ["error.upstream_failure", 'instances.#(modelId=="a")', "a.b.c", "#", "..0", "@this", "a|b"]
)


@given(json_values)
def test_the_depth_of_serialised_json_is_measured_exactly(value: Any) -> None:
    assert nesting_depth(orjson.dumps(value)) == depth_of(value)


@given(json_values, st.integers(0, 2))
def test_whitespace_and_indentation_do_not_change_the_depth(value: Any, indent: int) -> None:
    text = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0)
    assert nesting_depth(text) == depth_of(value)


@given(json_bytes)
def test_the_depth_is_never_below_what_a_parser_sees(body: bytes) -> None:
    """Wherever orjson parses a body, the guard's figure is at least the real depth."""
    depth = nesting_depth(body)
    assert depth >= 0
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    assert depth >= depth_of(value)


def _parses(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


@given(nested_text())
def test_guarded_validation_answers_or_refuses_deep_bodies(body: bytes) -> None:
    """Never a crash: below the limit, the answer says whether the body is JSON (orjson is
    the oracle: it parses every depth up to the limit); above it, a GraphError (400/502)."""
    for check, status in ((request_json_valid, 400), (lambda b: json_valid(b, step="s"), 502)):
        if nesting_depth(body) > DEFAULT_MAX_NESTING:
            with pytest.raises(GraphError) as refused:
                check(body)
            assert refused.value.status == status
        else:
            assert check(body) == _parses(body)


@given(conditions)
def test_any_condition_either_compiles_or_is_a_config_error(condition: str) -> None:
    spec = {"nodes": {"root": {"routerType": "Switch", "steps": [
        {"serviceUrl": "http://m/x", "condition": condition}]}}}  # fmt: skip
    try:
        graph = parse_spec(spec)
    except ConfigError:
        return
    assert graph.root.steps[0].condition == condition


KEY_PATHS = {"error.upstream_failure": ("error", "upstream_failure"), "a.b.c": ("a", "b", "c")}


def _has_keys(value: Any, keys: tuple[str, ...]) -> bool:
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return False
        value = value[key]
    return True


@given(
    conditions,
    json_bytes
    | st.sampled_from(
        [b'{"error":{"upstream_failure":true}}', b'{"a":{"b":{"c":null}}}', b'{"a":{"b":[]}}']
    ),
)
def test_conditions_on_any_guarded_body_answer_what_gjson_answers(
    condition: str, body: bytes
) -> None:
    """The compiled condition answers as GJSON does on the spec's text; for key paths, the
    answer is whether the keys exist (orjson's parse as the oracle)."""
    assume(nesting_depth(body) <= DEFAULT_MAX_NESTING)
    try:
        graph = parse_spec({"nodes": {"root": {"routerType": "Switch", "steps": [
            {"serviceUrl": "http://m/x", "condition": condition}]}}})  # fmt: skip
    except ConfigError:
        return
    step = graph.root.steps[0]
    if not pygjson.validate(body):
        return
    holds = condition_holds(step, body)
    assert holds == (bool(condition) and pygjson.get_bytes(body, condition).exists())
    if condition in KEY_PATHS and _parses(body):
        assert holds == _has_keys(orjson.loads(body), KEY_PATHS[condition])


@pytest.mark.parametrize("depth", [DEFAULT_MAX_NESTING, DEFAULT_MAX_NESTING + 1])
def test_the_limit_is_inclusive(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    if depth <= DEFAULT_MAX_NESTING:
        assert request_json_valid(body)
    else:
        with pytest.raises(GraphError):
            request_json_valid(body)
