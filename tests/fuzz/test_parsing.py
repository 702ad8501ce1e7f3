"""Properties of request parsing in both servers' pure parts: any input, a clear answer.

A parse either succeeds or raises the one error class that becomes a 4xx; anything else
(a ``KeyError``, ``TypeError`` or ``RecursionError``) would reach the client as a 500.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nexus.edge.asgi import ReceiveEvent, read_body, request_id_from
from nexus.errors import InvalidRequest, PayloadTooLarge
from nexus.router.executor import map_predictions_to_instances
from nexus.router.headers import HeaderPropagation, canonical_header_name, compile_patterns
from nexus.transformer.openai import parse
from tests.fuzz.strategies import json_bytes, json_values, tricky_text

message_like = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]) | json_values},
    optional={"content": json_values, "name": tricky_text},
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["chat", ""]) | json_values,
        "messages": st.lists(message_like, max_size=3) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.just({"include_usage": True}) | json_values,
        "max_tokens": st.integers(-5, 10**12) | json_values,
        "prompt": json_values,
        "input": json_values,
    },
)


@pytest.mark.parametrize("kind", ["chat", "completions", "embeddings"])
@given(raw=json_bytes | chat_like.map(orjson.dumps))
def test_openai_parse_accepts_or_raises_invalid_request(kind: Any, raw: bytes) -> None:
    try:
        request = parse(kind, raw, default_max_tokens=16)
    except InvalidRequest as exc:
        refused = exc
    else:
        assert request.model
        assert request.token_estimate >= 1
        return
    assert refused.status == 400


@given(
    chunks=st.lists(st.binary(max_size=64), min_size=1, max_size=6),
    limit=st.integers(1, 200),
    declared=st.none() | st.binary(max_size=8) | st.integers(0, 400).map(lambda n: str(n).encode()),
)
async def test_read_body_returns_the_body_or_a_4xx(
    chunks: list[bytes], limit: int, declared: bytes | None
) -> None:
    messages: list[ReceiveEvent] = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]

    async def receive() -> ReceiveEvent:
        return messages.pop(0)

    try:
        body = await read_body(receive, limit=limit, content_length=declared)
    except (PayloadTooLarge, InvalidRequest) as exc:
        refused = exc
    else:
        assert body == b"".join(chunks)
        assert len(body) <= limit
        return
    assert refused.status in (400, 413)


@given(st.binary(max_size=300))
def test_request_ids_are_always_safe_log_tokens(value: bytes) -> None:
    rid = request_id_from(value)
    assert 1 <= len(rid) <= 128
    assert rid.isascii()
    assert all(c.isalnum() or c in "._:-" for c in rid)


@given(st.lists(st.tuples(st.binary(max_size=30), st.binary(max_size=60)), max_size=20))
def test_header_propagation_takes_any_header_bytes(headers: list[tuple[bytes, bytes]]) -> None:
    propagation = HeaderPropagation(compile_patterns("Authorization,^X-.*$,Api"))
    for name, value in propagation.select(headers):
        assert name == canonical_header_name(name.lower().encode("latin-1"))
        assert isinstance(value, str)


@given(json_bytes)
def test_mapping_predictions_to_instances_never_fails(body: bytes) -> None:
    mapped = map_predictions_to_instances(body)
    if mapped != body:
        assert "instances" in orjson.loads(mapped)
