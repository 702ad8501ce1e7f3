"""Validation of OpenAI request bodies: every malformed shape is a 400 naming the param."""

from __future__ import annotations

import orjson
import pytest

from nexus.errors import InvalidRequest
from nexus.transformer import openai


def parse(kind: openai.Kind, body: object) -> openai.OpenAIRequest:
    return openai.parse(kind, orjson.dumps(body), default_max_tokens=100)


def test_chat_request_estimate_counts_prompt_and_max_tokens() -> None:
    request = parse(
        "chat", {"model": "chat", "messages": [{"role": "user", "content": "x" * 400}],
                 "max_tokens": 50}
    )  # fmt: skip
    assert request.model == "chat"
    assert not request.stream
    assert request.token_estimate == 100 + 1 + 50


@pytest.mark.parametrize(
    ("kind", "body", "param"),
    [
        ("chat", {"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ("chat", {"model": 3, "messages": []}, "model"),
        ("chat", {"model": "chat"}, "messages"),
        ("chat", {"model": "chat", "messages": []}, "messages"),
        ("chat", {"model": "chat", "messages": ["hi"]}, "messages[0]"),
        ("chat", {"model": "chat", "messages": [{"role": "user", "content": 5}]},
         "messages[0].content"),
        ("chat", {"model": "chat", "messages": [{"role": "user"}], "stream": "yes"}, "stream"),
        ("chat", {"model": "chat", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens"),
        ("chat", {"model": "chat", "messages": [{"role": "user"}], "max_tokens": True},
         "max_tokens"),
        ("completions", {"model": "chat", "prompt": 5}, "prompt"),
        ("completions", {"model": "chat", "prompt": []}, "prompt"),
        ("embeddings", {"model": "chat", "input": []}, "input"),
    ],
)  # fmt: skip
def test_bad_bodies_name_the_param(kind: openai.Kind, body: object, param: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        parse(kind, body)
    assert error.value.param == param
    assert error.value.status == 400
    assert "upstream_failure" not in error.value.body()["error"]


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_non_object_bodies_are_400(raw: bytes) -> None:
    with pytest.raises(InvalidRequest):
        openai.parse("chat", raw, default_max_tokens=1)


def test_upstream_body_rewrites_model_and_asks_for_usage_when_streaming() -> None:
    raw = orjson.dumps(
        {"model": "public", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    request = openai.parse("chat", raw, default_max_tokens=1)
    body = orjson.loads(openai.upstream_body(request, raw, served_name="served"))
    assert body["model"] == "served"
    assert body["stream_options"] == {"include_usage": True}


def test_upstream_body_untouched_when_nothing_changes() -> None:
    raw = b'{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'
    request = openai.parse("chat", raw, default_max_tokens=1)
    assert openai.upstream_body(request, raw, served_name="chat") is raw
