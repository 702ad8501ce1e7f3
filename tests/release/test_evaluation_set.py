"""The evaluation set's format: what a model owner may write, and the refusals that name the fault."""

from __future__ import annotations

import pytest

from nexus.errors import ConfigError
from nexus.release.evaluation import Check, EvaluationSet
from nexus.release.gate import GateThresholds


@pytest.mark.parametrize(
    ("check", "answer", "passes"),
    [
        (Check("exact", "42"), " 42\n", True),
        (Check("exact", "42"), "42!", False),
        (Check("contains", "Paris"), "It is Paris.", True),
        (Check("contains", "Paris"), "It is Rome.", False),
        (Check("regex", r"^\d+$"), "123", True),
        (Check("regex", r"^\d+$"), "12a", False),
        (Check("json_schema", {"type": "object", "required": ["a"]}), '{"a": 1}', True),
        (Check("json_schema", {"type": "object", "required": ["a"]}), '{"b": 1}', False),
        (Check("json_schema", {"type": "object"}), "not json", False),
    ],
)
def test_checks_on_greedy_answers(check: Check, answer: str, passes: bool) -> None:
    assert check.passes(answer) is passes


def test_a_set_round_trips_through_its_json() -> None:
    data = {"examples": [{"id": "a", "prompt": "p", "reference": " r", "max_tokens": 4,
                          "checks": [{"regex": "x"}, {"json_schema": {"type": "string"}}]}]}  # fmt: skip
    parsed = EvaluationSet.from_json(data)
    assert parsed.to_json() == data
    assert (
        EvaluationSet.loads('{"examples": [{"prompt": "p", "reference": "r"}]}')
        .examples[0]
        .max_tokens
        == 16
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], 'a JSON object with an "examples" list'),
        ({"examples": []}, "no examples"),
        ({"examples": ["x"]}, "example 0 must be an object"),
        ({"examples": [{"id": "q", "prompt": "", "reference": "r"}]},
         "example 'q': prompt must be a non-empty string"),
        ({"examples": [{"prompt": "p", "reference": "r", "max_tokens": 0}]},
         "max_tokens must be a positive integer"),
        ({"examples": [{"prompt": "p", "reference": "r", "checks": [{"startswith": "x"}]}]},
         "a check is one of ['contains', 'exact', 'json_schema', 'regex']"),
        ({"examples": [{"prompt": "p", "reference": "r", "checks": [{"regex": "("}]}]},
         "invalid regex '('"),
        ({"examples": [{"prompt": "p", "reference": "r", "checks": [{"json_schema": {"type": 5}}]}]},
         "invalid json_schema"),
        ({"examples": [{"prompt": "p", "reference": "r", "checks": [{"contains": 3}]}]},
         "contains takes a string"),
        ({"examples": [{"id": "a", "prompt": "p", "reference": "r"},
                       {"id": "a", "prompt": "p", "reference": "r"}]}, "ids must be unique"),
    ],
)  # fmt: skip
def test_defects_are_refused_with_the_example_and_field(data: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        EvaluationSet.from_json(data)
    assert message in str(info.value)


def test_not_json_is_refused() -> None:
    with pytest.raises(ConfigError, match="not JSON"):
        EvaluationSet.loads("{")


def test_thresholds_come_from_the_models_tags() -> None:
    tags = {"quality.max_logprob_drop": "0.25", "quality.min_examples": "5"}
    assert GateThresholds.from_tags(tags) == GateThresholds(0.25, 0.0, 5)
    with pytest.raises(ConfigError, match=r"quality\.min_examples='x' must be an integer"):
        GateThresholds.from_tags({"quality.min_examples": "x"})
