"""SSE through the transformer: chunk by chunk, usage settled, failures before and after bytes."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.support.servers import Transformer, Upstream
from tests.transformer.conftest import KEY, TOKEN_KEY, chat, set_faults

AUTH = {"Authorization": f"Bearer {KEY}"}


def events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e]


def test_first_byte_arrives_long_before_the_end(gateway: Transformer, healthy: Upstream) -> None:
    set_faults(healthy, token_latency_ms=50)
    started = time.monotonic()
    first = None
    chunks = 0
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions",
        json=chat(max_tokens=20, stream=True), headers=AUTH, timeout=30,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for _ in response.iter_raw():
            chunks += 1
            if first is None:
                first = time.monotonic() - started
    total = time.monotonic() - started
    assert first is not None
    assert total > 0.9  # 19 gaps of 50 ms
    # Unbuffered, the 19 gaps come after the first byte however slow the machine; buffered,
    # the first byte would come with the last.
    assert total - first >= 0.6, (first, total)
    assert chunks >= 10, "the answer arrived in one piece: something buffered it"


@pytest.mark.usefixtures("healthy")
def test_usage_chunk_only_when_the_client_asked(gateway: Transformer) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    plain = httpx.post(url, json=chat(stream=True), headers=AUTH).text
    assert '"usage"' not in plain
    assert events(plain)[-1] == "data: [DONE]"
    asked = httpx.post(
        url, json=chat(stream=True, stream_options={"include_usage": True}), headers=AUTH
    ).text
    usage_events = [e for e in events(asked) if '"usage"' in e]
    assert len(usage_events) == 1
    assert orjson.loads(usage_events[0][5:])["usage"]["completion_tokens"] == 4


@pytest.mark.usefixtures("healthy")
def test_streamed_usage_settles_the_token_budget(gateway: Transformer) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    headers = {"X-API-Key": TOKEN_KEY}
    body = chat("primary", max_tokens=50, stream=True)  # the estimate reserves ~52 tokens
    first = httpx.post(url, json=body, headers=headers)
    second = httpx.post(url, json=body, headers=headers)
    left_after_first = int(first.headers["x-ratelimit-remaining-tokens"])
    left_after_second = int(second.headers["x-ratelimit-remaining-tokens"])
    # Both admissions reserve the same estimate; between them the first reservation was
    # replaced by the real usage cpu_llm reported (1 prompt + 50 completion tokens).
    assert left_after_first - left_after_second == 1 + 50


def test_failure_after_first_byte_ends_with_an_error_event(
    gateway: Transformer, healthy: Upstream
) -> None:
    set_faults(healthy, break_stream_after=3)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=chat(max_tokens=10, stream=True), headers=AUTH
    )
    assert response.status_code == 200
    stream = events(response.text)
    assert stream[-1].startswith("event: error\ndata: ")
    error = orjson.loads(stream[-1].split("data: ", 1)[1])["error"]
    assert error["upstream_failure"] is True
    assert "data: [DONE]" not in stream
    # vLLM's role chunk, then the 3 token chunks sent before the break.
    assert len([e for e in stream if e.startswith("data: {")]) == 1 + 3


def test_failure_before_first_byte_is_a_json_error(gateway: Transformer, healthy: Upstream) -> None:
    set_faults(healthy, error_ratio=1.0, error_status=500)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=chat(stream=True), headers=AUTH
    )
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["upstream_failure"] is True
