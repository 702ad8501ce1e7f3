"""What the demo counts as an answer: a completion, not a 200 that carries an error."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.cli.demo import answered


@pytest.mark.parametrize(
    ("status", "body", "problem"),
    [
        (200, {"choices": [{"message": {"content": "hi"}}]}, None),
        # A fallback graph's Sequence relays a client error of the primary with status 200.
        (200, {"error": {"type": "rate_limit_error", "code": "rate_limit_exceeded"}}, "rate_limit_exceeded"),
        (503, {}, "status 503"),
        (200, {"error": "not an OpenAI error"}, "status 200"),
    ],
)  # fmt: skip
def test_answered(status: int, body: dict[str, Any], problem: str | None) -> None:
    assert answered(status, body) == problem
