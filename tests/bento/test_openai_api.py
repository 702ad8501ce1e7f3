"""The worker's OpenAI and KServe routes, through the official client and raw HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
import openai
import pytest
from bento.llm_text import generate

from tests.bento.conftest import Worker

MESSAGES = [{"role": "user", "content": "tell me about canaries"}]


@contextlib.contextmanager
def client(worker: Worker, prefix: str = "") -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{worker.url}{prefix}/v1", api_key="unused", max_retries=0) as api:
        yield api


@pytest.mark.parametrize("prefix", ["", "/openai"])
def test_chat_is_deterministic_under_both_runtime_prefixes(worker: Worker, prefix: str) -> None:
    with client(worker, prefix) as api:
        first = api.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=6)
        again = api.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=6)
        other = api.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "something else"}], max_tokens=6
        )
    assert first.choices[0].message.content == " ".join(generate(MESSAGES[0]["content"], 6))
    assert again.choices[0].message.content == first.choices[0].message.content
    assert other.choices[0].message.content != first.choices[0].message.content
    assert first.usage is not None
    assert first.usage.completion_tokens == 6
    assert first.usage.total_tokens == first.usage.prompt_tokens + 6


def test_completions_and_models(worker: Worker) -> None:
    with client(worker) as api, client(worker, "/openai") as prefixed:
        answer = api.completions.create(model="chat", prompt="once upon", max_tokens=3)
        assert answer.choices[0].text == " ".join(generate("once upon", 3))
        assert [m.id for m in api.models.list()] == ["chat"]
        assert [m.id for m in prefixed.models.list()] == ["chat"]


@pytest.mark.parametrize("prefix", ["", "/openai"])
def test_stream_carries_the_same_text_and_usage_when_asked(worker: Worker, prefix: str) -> None:
    with client(worker, prefix) as api:
        plain = api.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5)
        chunks = list(api.chat.completions.create(model="chat", messages=MESSAGES, max_tokens=5,
                      stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert plain.usage is not None
    assert chunks[-1].usage.model_dump() == plain.usage.model_dump()


def test_stream_has_no_usage_unless_asked(worker: Worker) -> None:
    with httpx.stream("POST", f"{worker.url}/v1/completions",
                      json={"model": "chat", "prompt": "hi", "max_tokens": 3, "stream": True}) as r:  # fmt: skip
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert frames[-1] == "data: [DONE]"
    assert len(frames) == 4
    assert all('"usage"' not in f for f in frames)


def test_kserve_v1_and_v2_protocols(worker: Worker) -> None:
    v1 = httpx.post(f"{worker.url}/v1/models/chat:predict", json={"instances": ["a", "b"]})
    assert v1.status_code == 200
    assert v1.json() == {"predictions": [" ".join(generate("a", 4)), " ".join(generate("b", 4))]}
    body = {
        "id": "r1",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
    }
    v2 = httpx.post(f"{worker.url}/v2/models/chat/infer", json=body)
    assert v2.status_code == 200
    assert v2.json()["model_name"] == "chat"
    assert v2.json()["id"] == "r1"
    assert v2.json()["outputs"][0]["data"] == [" ".join(generate("a", 4))]
    assert httpx.get(f"{worker.url}/v1/models/chat").json() == {"name": "chat", "ready": True}
    assert httpx.get(f"{worker.url}/v2/models/chat/ready").status_code == 200
    assert httpx.get(f"{worker.url}/health").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", b"[1, 2]", 400),
        ("POST", "/v1/chat/completions", b'{"model": "chat"}', 400),
        ("POST", "/v1/chat/completions", b'{"model": "chat", "messages": "hi"}', 400),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}',
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}',
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000000}',
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"messages": [{"role": "user", "content": "x"}], "stream_options": 3}',
            400,
        ),
        (
            "POST",
            "/v1/chat/completions",
            b'{"model": "other", "messages": [{"role": "user", "content": "x"}]}',
            404,
        ),
        ("POST", "/v1/completions", b'{"prompt": {"a": 1}}', 400),
        ("POST", "/openai/v1/completions", b"", 400),
        ("POST", "/v1/models/other:predict", b'{"instances": []}', 404),
        ("POST", "/v1/models/chat:predict", b'{"instances": 3}', 400),
        ("POST", "/v2/models/chat/infer", b'{"inputs": 3}', 400),
        ("POST", "/v2/models/chat/infer", b'{"inputs": [{"data": 3}]}', 400),
        ("GET", "/v1/models/other", b"", 404),
        ("POST", "/admin/faults", b'{"no_such_fault": 1}', 400),
        ("POST", "/admin/faults", b'{"hang": "false"}', 400),
        ("POST", "/admin/faults", b'{"error_ratio": "lots"}', 400),
        ("GET", "/v1/chat/completions", b"", 405),
        ("GET", "/no/such/route", b"", 404),
    ],
)
def test_bad_input_is_a_4xx_never_a_500(
    worker: Worker, method: str, path: str, body: bytes, status: int
) -> None:
    response = httpx.request(method, worker.url + path, content=body,
                             headers={"content-type": "application/json"})  # fmt: skip
    assert response.status_code == status, response.text
    if response.headers.get("content-type") == "application/json":
        error = response.json()["error"]  # vLLM's ErrorResponse shape
        assert error["code"] == status


def test_official_client_maps_worker_errors(worker: Worker) -> None:
    with client(worker) as api:
        with pytest.raises(openai.NotFoundError):
            api.chat.completions.create(model="nope", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError):
            api.chat.completions.create(model="chat", messages=[], max_tokens=2)
