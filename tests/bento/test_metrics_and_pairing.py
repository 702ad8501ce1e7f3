"""vLLM's metric names on the worker's /metrics, the transformer in front of it, and
``bentoml serve`` running the same service."""

from __future__ import annotations

import concurrent.futures
import shutil
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.bento.conftest import Worker, cpu_worker
from tests.support.processes import REPO, free_port, managed
from tests.support.servers import transformer

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "two words"}], "max_tokens": 5}
LABEL = '{model_name="chat"}'
VLLM_SERIES = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:time_to_first_token_seconds_count",
    "vllm:e2e_request_latency_seconds_count",
    "vllm:request_prompt_tokens_count",
    "vllm:request_generation_tokens_count",
)


def test_vllm_series_are_exposed_with_model_name_and_move(worker: Worker) -> None:
    before = {name: worker.metric(name + LABEL) for name in VLLM_SERIES}
    success = 'vllm:request_success_total{finished_reason="length",model_name="chat"}'
    success_before = worker.metric(success)
    httpx.post(f"{worker.url}/v1/chat/completions", json=CHAT).raise_for_status()
    with httpx.stream(
        "POST", f"{worker.url}/v1/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        r.read()
    text = httpx.get(f"{worker.url}/metrics").text
    for name in VLLM_SERIES:
        assert f"{name}{LABEL}" in text, name
    assert (
        worker.metric("vllm:generation_tokens_total" + LABEL)
        == before["vllm:generation_tokens_total"] + 10
    )
    assert (
        worker.metric("vllm:prompt_tokens_total" + LABEL) == before["vllm:prompt_tokens_total"] + 4
    )
    assert (
        worker.metric("vllm:e2e_request_latency_seconds_count" + LABEL)
        == before["vllm:e2e_request_latency_seconds_count"] + 2
    )
    assert (
        worker.metric("vllm:time_to_first_token_seconds_count" + LABEL)
        == before["vllm:time_to_first_token_seconds_count"] + 2
    )
    assert worker.metric(success) == success_before + 2
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert "# TYPE vllm:time_to_first_token_seconds histogram" in text


def test_running_and_waiting_gauges_follow_max_num_seqs(tmp_path: Path) -> None:
    with cpu_worker(tmp_path, "--max-num-seqs", "1", "--token-latency-ms", "300") as worker:
        url = f"{worker.url}/v1/chat/completions"
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(httpx.post, url, json=CHAT, timeout=30) for _ in range(3)]
            time.sleep(0.6)
            running = worker.metric("vllm:num_requests_running" + LABEL)
            waiting = worker.metric("vllm:num_requests_waiting" + LABEL)
            assert all(f.result().status_code == 200 for f in futures)
        assert (running, waiting) == (1, 2)
        assert worker.metric("vllm:num_requests_running" + LABEL) == 0
        assert worker.metric("vllm:num_requests_waiting" + LABEL) == 0


def test_openai_chat_through_the_transformer_to_the_worker(worker: Worker, tmp_path: Path) -> None:
    env = {"GATEWAY_API_KEYS": "pair-key"}
    with (
        transformer(
            tmp_path, model="chat", predictor_host=f"127.0.0.1:{worker.port}", env=env
        ) as gw,
        openai.OpenAI(base_url=f"{gw.url}/openai/v1", api_key="pair-key", max_retries=0) as api,
    ):
        direct = httpx.post(f"{worker.url}/v1/chat/completions", json=CHAT).json()
        answer = api.chat.completions.create(**CHAT)
        assert answer.choices[0].message.content == direct["choices"][0]["message"]["content"]
        chunks = list(api.chat.completions.create(**CHAT, stream=True,
                                                   stream_options={"include_usage": True}))  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == answer.choices[0].message.content
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 5
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{gw.url}/openai/v1", api_key="wrong",
                          max_retries=0).chat.completions.create(**CHAT)  # fmt: skip


@pytest.mark.skipif(shutil.which("bentoml", path=str(Path(sys.executable).parent)) is None,
                    reason="bentoml CLI not installed next to this Python")  # fmt: skip
def test_bentoml_serve_runs_the_same_service(tmp_path: Path) -> None:
    port = free_port()
    bentoml = str(Path(sys.executable).parent / "bentoml")
    cmd = [bentoml, "serve", "service:CpuWorker", "--host", "127.0.0.1", "--port", str(port),
           "--working-dir", str(REPO / "bento")]  # fmt: skip
    env = {"MODEL_NAME": "served", "BENTOML_HOME": str(tmp_path / "bentoml-home"),
           "PYTHONPATH": f"{REPO / 'platform'}:{REPO / 'bento'}"}  # fmt: skip
    with managed(cmd, log=tmp_path / "bentoml-serve.log", env=env,
                 ready_url=f"http://127.0.0.1:{port}/health", timeout=90):  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        chat = {**CHAT, "model": "served"}
        assert httpx.post(f"{url}/openai/v1/chat/completions", json=chat).status_code == 200
        assert (
            'vllm:generation_tokens_total{model_name="served"} 5.0'
            in httpx.get(f"{url}/metrics").text
        )
        # Only cpu_worker.py owns its socket; under the arbiter refusing is said to be impossible.
        assert httpx.post(f"{url}/admin/faults", json={"refuse": True}).status_code == 501
