"""The official ``openai`` client on real vLLM, through the transformer and the fallback graph."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.router.conftest import Router
from tests.support.servers import Transformer
from tests.vllm.conftest import KEY

MESSAGES = [{"role": "user", "content": "What is KServe?"}]
GREEDY = {"ignore_eos": True}  # vLLM's sampling parameter: exact lengths from a random model


def test_openai_client_through_the_transformer(vllm_gateway: Transformer) -> None:
    client = openai.OpenAI(base_url=f"{vllm_gateway.url}/openai/v1", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=6, temperature=0, extra_body=GREEDY
    )
    assert completion.system_fingerprint is not None
    assert completion.system_fingerprint.startswith("vllm-")
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6
    assert "chat" in [m.id for m in client.models.list()]
    stream = client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=5, stream=True,
        stream_options={"include_usage": True}, extra_body=GREEDY,
    )  # fmt: skip
    chunks = list(stream)
    usage = [c.usage for c in chunks if c.usage]
    assert len(usage) == 1
    assert usage[0].completion_tokens == 5
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="chat", prompt="hello world " * 400, max_tokens=2)
    client.close()


def test_openai_client_through_the_fallback_graph(graph: Router) -> None:
    client = openai.OpenAI(base_url=f"{graph.url}/openai/v1", api_key=KEY, max_retries=0)
    completion = client.chat.completions.create(
        model="chat", messages=MESSAGES, max_tokens=4, extra_body=GREEDY
    )
    assert completion.system_fingerprint is not None
    assert completion.system_fingerprint.startswith("vllm-")
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4
    client.close()


def test_vllms_context_refusal_does_not_fall_back(graph: Router) -> None:
    body = {"model": "chat", "max_tokens": 2,
            "messages": [{"role": "user", "content": "hello world " * 400}]}  # fmt: skip
    response = httpx.post(f"{graph.url}/openai/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {KEY}"}, timeout=60)  # fmt: skip
    error = response.json()["error"]
    # vLLM's own message, relayed: the fallback (a closed port) was never tried.
    assert "maximum context length is 512" in error["message"]
    assert not error.get("upstream_failure")
