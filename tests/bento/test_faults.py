"""Faults and pacing, each set at start (flags) and at run time (``POST /admin/faults``).

A predictor that can be broken on purpose is what the transformer's breaker, the graph's
fallback and the demos rely on; every kind is checked from the client's side of a socket.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.bento.conftest import Worker, cpu_worker

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def stream_chat(url: str, max_tokens: int = 4) -> Iterator[str]:
    body = {**CHAT, "max_tokens": max_tokens, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=10) as response:
        yield from (line for line in response.iter_lines() if line.startswith("data: "))


def assert_refused(url: str) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=2)


def assert_hangs(url: str) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=1)


def assert_stream_breaks_after(url: str, n: int) -> None:
    frames: list[str] = []

    def read() -> None:
        frames.extend(stream_chat(url, max_tokens=8))

    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        read()
    assert len(frames) == 1 + n  # vLLM's role chunk, then n token chunks
    assert "data: [DONE]" not in frames


def test_tokens_are_paced_first_byte_well_before_the_end(tmp_path: Path) -> None:
    with cpu_worker(tmp_path, "--token-latency-ms", "60") as worker:
        started = time.monotonic()
        arrivals = [time.monotonic() - started for _ in stream_chat(worker.url, max_tokens=10)]
    # The 9 gaps of 60 ms lie between the first token and the last, however loaded the
    # machine (an absolute bound on the first token failed under load).
    assert arrivals[-1] - arrivals[0] >= 0.45


def test_first_token_latency_at_run_time(clean_worker: Worker) -> None:
    clean_worker.set_faults(first_token_latency_ms=400)
    started = time.monotonic()
    first = next(iter(stream_chat(clean_worker.url)))
    assert first.startswith("data: {")
    assert time.monotonic() - started >= 0.4


def test_error_ratio_at_start(tmp_path: Path) -> None:
    with cpu_worker(tmp_path, "--error-ratio", "1", "--error-status", "503") as worker:
        response = httpx.post(f"{worker.url}/v1/chat/completions", json=CHAT)
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "injected fault"
        with (
            openai.OpenAI(base_url=f"{worker.url}/v1", api_key="x", max_retries=0) as api,
            pytest.raises(openai.InternalServerError),
        ):
            api.chat.completions.create(**CHAT)


def test_error_ratio_at_run_time_and_cleared(clean_worker: Worker) -> None:
    url = f"{clean_worker.url}/v1/chat/completions"
    assert httpx.post(url, json=CHAT).status_code == 200
    clean_worker.set_faults(error_ratio=1.0, error_status=500)
    assert {httpx.post(url, json=CHAT).status_code for _ in range(5)} == {500}
    clean_worker.set_faults(error_ratio=0.5)
    statuses = [httpx.post(url, json=CHAT).status_code for _ in range(60)]
    assert 5 < statuses.count(500) < 55
    clean_worker.set_faults(error_ratio=0.0)
    assert httpx.post(url, json=CHAT).status_code == 200


def test_hang_at_start(tmp_path: Path) -> None:
    with cpu_worker(tmp_path, "--hang") as worker:
        assert_hangs(worker.url)
        assert httpx.get(f"{worker.url}/health").status_code == 200


def test_hang_at_run_time(clean_worker: Worker) -> None:
    clean_worker.set_faults(hang=True)
    assert_hangs(clean_worker.url)
    clean_worker.set_faults(hang=False)
    assert httpx.post(f"{clean_worker.url}/v1/chat/completions", json=CHAT).status_code == 200


def test_break_stream_at_start(tmp_path: Path) -> None:
    with cpu_worker(tmp_path, "--break-stream-after", "3") as worker:
        assert_stream_breaks_after(worker.url, 3)


def test_break_stream_at_run_time(clean_worker: Worker) -> None:
    clean_worker.set_faults(break_stream_after=2)
    assert_stream_breaks_after(clean_worker.url, 2)
    with (
        openai.OpenAI(base_url=f"{clean_worker.url}/v1", api_key="x", max_retries=0) as api,
        pytest.raises(openai.APIError),
    ):
        list(api.chat.completions.create(**{**CHAT, "max_tokens": 8}, stream=True))
    clean_worker.set_faults(break_stream_after=0)
    assert list(stream_chat(clean_worker.url))[-1] == "data: [DONE]"


def test_refuse_at_run_time_then_cleared(clean_worker: Worker) -> None:
    with httpx.Client(base_url=clean_worker.url, timeout=2) as pooled:
        assert pooled.post("/v1/chat/completions", json=CHAT).status_code == 200
        # Asked on the main port itself: the answer still arrives, then the socket closes.
        answer = pooled.post("/admin/faults", json={"refuse": True})
        assert answer.json()["faults"]["refuse"] is True
        time.sleep(0.2)
        assert_refused(clean_worker.url)
        # A connection pooled before the fault gets no answer either.
        with pytest.raises(httpx.TransportError):
            pooled.post("/v1/chat/completions", json=CHAT)
    assert httpx.get(f"{clean_worker.admin_url}/health").status_code == 200
    clean_worker.set_faults(refuse=False)
    time.sleep(0.2)
    assert httpx.post(f"{clean_worker.url}/v1/chat/completions", json=CHAT).status_code == 200


def test_refuse_at_start_until_cleared(tmp_path: Path) -> None:
    with cpu_worker(tmp_path, "--refuse", refusing=True) as worker:
        assert_refused(worker.url)
        worker.set_faults(refuse=False)
        time.sleep(0.2)
        assert httpx.post(f"{worker.url}/v1/chat/completions", json=CHAT).status_code == 200


def test_refuse_for_a_while_clears_itself(clean_worker: Worker) -> None:
    clean_worker.set_faults(refuse=True, refuse_seconds=1.0)
    time.sleep(0.2)
    assert_refused(clean_worker.url)
    time.sleep(1.2)
    assert httpx.post(f"{clean_worker.url}/v1/chat/completions", json=CHAT).status_code == 200
    assert httpx.get(f"{clean_worker.admin_url}/admin/stats").json()["faults"]["refuse"] is False
