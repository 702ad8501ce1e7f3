"""``deeper_than``: the bracket count short-cut answers exactly as the full depth scan."""

from __future__ import annotations

import pytest

from nexus.edge.nesting import DEFAULT_MAX_NESTING, deeper_than, nesting_depth

LIMIT = DEFAULT_MAX_NESTING


@pytest.mark.parametrize(
    ("body", "deeper"),
    [
        (b"[" * LIMIT + b"]" * LIMIT, False),  # exactly at the limit: the count alone decides
        (b"[" * (LIMIT + 1) + b"]" * (LIMIT + 1), True),
        (b"{" * (LIMIT + 1), True),  # unclosed (invalid) still counts as deep
        (b'["' + b"[" * 1000 + b'"]', False),  # brackets inside a string: the scan decides
        (b"[" + b"[]," * 1000 + b"[]]", False),  # many brackets, shallow
        (b'{"a":' * 64 + b"[" * 65 + b"]" * 65 + b"}" * 64, True),  # mixed, 129 deep
        (b'{"model":"chat","messages":[{"role":"user","content":"hi"}]}', False),
    ],
)
def test_deeper_than_matches_the_scan(body: bytes, deeper: bool) -> None:
    assert deeper_than(body, LIMIT) is deeper
    assert (nesting_depth(body) > LIMIT) is deeper
