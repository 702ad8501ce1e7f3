"""Input shapes shared by the fuzz properties: JSON values, hostile JSON text, raw bytes."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

# Text that stresses JSON lexing: brackets, quotes and backslashes inside strings.
tricky_text = st.text(alphabet=st.sampled_from('[]{}"\\ab:,\n\u00e9\u2028'), max_size=20) | st.text(
    max_size=20
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text
)
json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text, inner, max_size=4),
    max_leaves=25,
)


@st.composite
def nested_text(draw: st.DrawFn) -> bytes:
    """Deep or broken nesting: runs of brackets, possibly unbalanced, around a value."""
    depth = draw(st.integers(0, 3000) | st.sampled_from([100_000, 1_000_000]))
    opener = draw(st.sampled_from([b"[", b'{"a":', b'{"error":']))
    closer = {b"[": b"]"}.get(opener, b"}")
    inner = draw(st.sampled_from([b"1", b'"x"', b"[]", b"", b'"[[["']))
    closed = draw(st.integers(0, depth))
    return opener * depth + inner + closer * closed


json_bytes = st.binary(max_size=300) | nested_text() | json_values.map(orjson.dumps)


def depth_of(value: Any) -> int:
    """Nesting depth of a decoded JSON value (containers count one level each), iteratively."""
    deepest = 0
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, list | dict):
            depth += 1
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth) for child in children)
        deepest = max(deepest, depth)
    return deepest
