"""What the transformer and the router add to a real vLLM stream: time to first token, tokens/s.

The same streamed request (greedy, 32 tokens, ``ignore_eos``) goes to the engine directly,
through the transformer, and through the fallback graph's router and the transformer, in
turns so that the machine's load hits all three alike. The README's figures come from
``bench/vllm.py``, which measures the same paths outside the test suite.
"""

from __future__ import annotations

import statistics
import time

import httpx
import orjson

from tests.router.conftest import Router
from tests.support.servers import Transformer
from tests.vllm.conftest import KEY, MODEL, Engine

ROUNDS = 5
TOKENS = 32


def _stream(url: str, model: str) -> tuple[float, float, int]:
    """(seconds to the first text, seconds from it to the last text, text chunks) of a stream.

    Only chunks with text count: vLLM's first chunk carries the role and no text, and a hop
    that buffered would show as fewer chunks arriving closer together.
    """
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True, "stream": True,
            "skip_special_tokens": False}  # fmt: skip
    started = time.perf_counter()
    arrivals = []
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = orjson.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                arrivals.append(time.perf_counter() - started)
    assert arrivals
    return arrivals[0], arrivals[-1] - arrivals[0], len(arrivals)


def test_overhead_of_transformer_and_router(
    vllm_engine: Engine, vllm_gateway: Transformer, graph: Router
) -> None:
    paths = {
        "direct": (f"{vllm_engine.url}/v1/chat/completions", MODEL),
        "transformer": (f"{vllm_gateway.url}/openai/v1/chat/completions", "chat"),
        "router+transformer": (f"{graph.url}/openai/v1/chat/completions", "chat"),
    }
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in paths}
    _stream(*paths["direct"])  # warm-up: the first request after start pays for lazy setup
    for _ in range(ROUNDS):
        for name, (url, model) in paths.items():
            samples[name].append(_stream(url, model))
    result = {}
    for name, runs in samples.items():
        ttft = statistics.median(r[0] for r in runs)
        rate = statistics.median((TOKENS - 1) / r[1] for r in runs if r[1] > 0)
        chunks = min(r[2] for r in runs)
        result[name] = {"ttft_ms": round(ttft * 1000, 1), "tokens_per_s": round(rate, 1),
                        "text_chunks_min": chunks}  # fmt: skip
    added = result["transformer"]["ttft_ms"] - result["direct"]["ttft_ms"]
    # Loose on purpose: two shared cores; the figure itself goes to the README.
    assert added < 250, result
    assert result["router+transformer"]["ttft_ms"] - result["direct"]["ttft_ms"] < 500, result
