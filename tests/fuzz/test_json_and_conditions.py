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


@given(nested_text())
def test_guarded_validation_answers_or_refuses_deep_bodies(body: bytes) -> None:
    """Never a crash: a bool below the limit, a GraphError (400/502) above it."""
    for check, status in ((request_json_valid, 400), (lambda b: json_valid(b, step="s"), 502)):
        refused: GraphError | None = None
        try:
            assert isinstance(check(body), bool)
        except GraphError as exc:
            refused = exc
        if refused is not None:
            assert refused.status == status
            assert nesting_depth(body) > DEFAULT_MAX_NESTING


@given(conditions)
def test_any_condition_either_compiles_or_is_a_config_error(condition: str) -> None:
    spec = {"nodes": {"root": {"routerType": "Switch", "steps": [
        {"serviceUrl": "http://m/x", "condition": condition}]}}}  # fmt: skip
    try:
        graph = parse_spec(spec)
    except ConfigError:
        return
    assert graph.root.steps[0].condition == condition


@given(conditions, json_bytes)
def test_conditions_on_any_guarded_body_answer_a_bool(condition: str, body: bytes) -> None:
    assume(nesting_depth(body) <= DEFAULT_MAX_NESTING)
    try:
        graph = parse_spec({"nodes": {"root": {"routerType": "Switch", "steps": [
            {"serviceUrl": "http://m/x", "condition": condition}]}}})  # fmt: skip
    except ConfigError:
        return
    step = graph.root.steps[0]
    if pygjson.validate(body):
        assert isinstance(condition_holds(step, body), bool)


@pytest.mark.parametrize("depth", [DEFAULT_MAX_NESTING, DEFAULT_MAX_NESTING + 1])
def test_the_limit_is_inclusive(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    if depth <= DEFAULT_MAX_NESTING:
        assert request_json_valid(body)
    else:
        with pytest.raises(GraphError):
            request_json_valid(body)
