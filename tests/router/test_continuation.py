"""Streams that survive their model (issue 24), through real processes on loopback.

Router (the shipped ``chat-fallback`` graph) → two transformers sharing a real redis-server
→ two CPU LLM servers. The primary's server drops every stream after 5 tokens
(``break_stream_after``, the fault the issue measured on ``nexus up``); its transformer ends
the stream with ``event: error``, and the router has the fallback continue the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from tests.router.conftest import Router, router_process
from tests.support.servers import Transformer, Upstream, cpu_llm, redis_server, transformer

REPO = Path(__file__).resolve().parents[2]
GRAPH = REPO / "graphs" / "inferencegraph.chat-fallback.yaml"
PRIMARY = "llama-8b.nexus.svc.cluster.local"
FALLBACK = "qwen-1-5b.nexus.svc.cluster.local"
KEY = "continue-key"
COUNTED = "continue-counted-key"  # 20 requests a minute, shared by both transformers
ENV = {
    "GATEWAY_API_KEYS": f"{KEY},{COUNTED}",
    "GATEWAY_API_KEY_POLICIES": orjson.dumps({COUNTED: {"rate_limit_per_minute": 20}}).decode(),
    "GATEWAY_MODEL_ALIASES": "chat",
    # Every stream reaches the primary, so every one of them needs continuing.
    "GATEWAY_CIRCUIT_BREAKER_MAX_FAILURES": "1000",
}
CHAT = "/openai/v1/chat/completions"
BROKEN_AFTER = 5


@dataclass
class Platform:
    tmp: Path
    router: Router
    primary_llm: Upstream
    fallback_llm: Upstream
    primary: Transformer
    fallback: Transformer

    def host_map(self) -> list[str]:
        return ["--host-map", f"{PRIMARY}=127.0.0.1:{self.primary.port}",
                "--host-map", f"{FALLBACK}=127.0.0.1:{self.fallback.port}"]  # fmt: skip

    @contextlib.contextmanager
    def other_router(self, *, args: tuple[str, ...] = (), **kwargs: Any) -> Iterator[Router]:
        env = {"PROPAGATE_HEADERS": "^Authorization$", **kwargs.pop("env", {})}
        source = {} if "spec" in kwargs else {"graph_file": GRAPH}
        with router_process(self.tmp, env=env, args=[*self.host_map(), *args],
                            **source, **kwargs) as router:  # fmt: skip
            yield router


def faults(llm: Upstream, **values: object) -> None:
    httpx.post(f"{llm.url}/admin/faults", json=values).raise_for_status()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("continuation")
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_server(tmp / "redis"))
        env = {**ENV, "GATEWAY_REDIS_URL": redis.url}
        primary_llm = stack.enter_context(cpu_llm(tmp, model="llama-8b"))
        fallback_llm = stack.enter_context(cpu_llm(tmp, model="qwen-1-5b"))
        primary = stack.enter_context(transformer(
            tmp, model="llama-8b", predictor_host=primary_llm.host, env=env))  # fmt: skip
        fallback = stack.enter_context(transformer(
            tmp, model="qwen-1-5b", predictor_host=fallback_llm.host, env=env))  # fmt: skip
        host_map = ["--host-map", f"{PRIMARY}=127.0.0.1:{primary.port}",
                    "--host-map", f"{FALLBACK}=127.0.0.1:{fallback.port}"]  # fmt: skip
        router = stack.enter_context(router_process(
            tmp, graph_file=GRAPH, env={"PROPAGATE_HEADERS": "^Authorization$"},
            args=host_map))  # fmt: skip
        yield Platform(tmp, router, primary_llm, fallback_llm, primary, fallback)


@pytest.fixture
def broken(platform: Platform) -> Iterator[Platform]:
    """The primary drops every stream after 5 tokens; both servers healthy afterwards."""
    faults(platform.primary_llm, break_stream_after=BROKEN_AFTER)
    try:
        yield platform
    finally:
        healthy = {"break_stream_after": 0, "error_ratio": 0.0, "token_latency_ms": 0.0}
        faults(platform.primary_llm, **healthy)
        faults(platform.fallback_llm, **healthy)


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat(**extra: object) -> dict[str, object]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 16, "stream": True, **extra}  # fmt: skip


def events(body: bytes) -> list[bytes]:
    return [event for event in body.split(b"\n\n") if event]


def chunks(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(e[6:]) for e in events(body)
            if e.startswith(b"data: {")]  # fmt: skip


async def post(client: aiohttp.ClientSession, url: str, body: object, key: str = KEY) -> bytes:
    headers = {"Authorization": f"Bearer {key}"}
    async with client.post(url, json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.read()


def log_lines(process_output: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in process_output.splitlines()
            if line.startswith("{") and '"request_id"' in line]  # fmt: skip


async def metric(client: aiohttp.ClientSession, router: Router, name: str) -> str:
    async with client.get(router.url + "/metrics") as response:
        text = await response.text()
    return "\n".join(line for line in text.splitlines() if line.startswith(name))


def assert_one_answer(body: bytes, *, usage: bool, text: bool = False) -> list[dict[str, Any]]:
    """One complete answer: no error event, one role chunk, one id, one finish, [DONE] last."""
    assert b"event: error" not in body, body
    assert events(body)[-1] == b"data: [DONE]", body
    assert body.count(b"[DONE]") == 1, body
    parts = chunks(body)
    assert len({part["id"] for part in parts}) == 1, body
    choices = [choice for part in parts for choice in part["choices"]]
    if not text:
        assert sum("role" in choice["delta"] for choice in choices) == 1, body
    assert [c["finish_reason"] for c in choices if c["finish_reason"]] == ["length"], body
    usages = [part["usage"] for part in parts if part.get("usage")]
    assert len(usages) == (1 if usage else 0), body
    return parts


def content(parts: list[dict[str, Any]]) -> list[str]:
    out = []
    for part in parts:
        for choice in part["choices"]:
            piece = choice["delta"].get("content") if "delta" in choice else choice["text"]
            if piece:
                out.append(piece)
    return out


async def test_twenty_broken_streams_end_as_one_complete_answer(
    broken: Platform, client: aiohttp.ClientSession
) -> None:
    """The issue's run: 20 of 20 streams through chat-fallback, the primary breaking each."""
    url = broken.router.url + CHAT
    request = chat(stream_options={"include_usage": True})
    for _ in range(20):
        # COUNTED allows 20 requests a minute across both transformers: a continuation
        # counted as a second request would be refused (429) and end in an error event.
        parts = assert_one_answer(await post(client, url, request, COUNTED), usage=True)
        pieces = content(parts)
        assert len(pieces) == 16 > BROKEN_AFTER
        assert " ".join(p.strip() for p in pieces) == "".join(pieces)  # words join cleanly
        (finish,) = [p for p in parts if p["choices"] and p["choices"][0]["finish_reason"]]
        assert finish["nexus_continuation"] == {
            "from": "llama-8b", "steps": ["qwen-1-5b"], "tokens_before": BROKEN_AFTER}  # fmt: skip
        (usage,) = [p["usage"] for p in parts if p.get("usage")]
        # The primary read 1 prompt token ("hello"); the whole answer is 16 tokens.
        assert usage == {"prompt_tokens": 1, "completion_tokens": 16, "total_tokens": 17}
    counted = await metric(client, broken.router, "nexus_router_stream_continuations_total")
    assert counted == (
        'nexus_router_stream_continuations_total{graph="chat-fallback",step="qwen-1-5b"} 20.0'
    )
    lines = log_lines(broken.router.process.output())[-20:]
    assert {(e["status"], e["continued_by"]) for e in lines} == {(200, "qwen-1-5b")}
    # Each transformer settled what its predictor produced: the fallback 11 tokens.
    fallback = [e for e in log_lines(broken.fallback.process.output()) if e.get("tokens")]
    assert [e["tokens"]["completion"] for e in fallback[-20:]] == [11] * 20


async def test_the_fallback_is_asked_to_continue_the_partial_answer(
    broken: Platform, client: aiohttp.ClientSession
) -> None:
    parts = assert_one_answer(await post(client, broken.router.url + CHAT, chat()), usage=False)
    sent = "".join(content(parts)[:BROKEN_AFTER])
    async with client.post(
        f"{broken.fallback_llm.url}/v1/chat/completions",
        json={"model": "qwen-1-5b", "max_tokens": 11, "continue_final_message": True,
              "add_generation_prompt": False,
              "messages": [{"role": "user", "content": "hello"},
                           {"role": "assistant", "content": sent}]},
    ) as response:  # fmt: skip
        direct = (await response.json())["choices"][0]["message"]["content"]
    assert "".join(content(parts)[BROKEN_AFTER:]) == direct


async def test_text_completions_continue_with_the_text_appended_to_the_prompt(
    broken: Platform, client: aiohttp.ClientSession
) -> None:
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"name": "llama-8b", "serviceUrl": f"http://{PRIMARY}/openai/v1/completions"},
        {"name": "qwen-1-5b", "serviceUrl": f"http://{FALLBACK}/openai/v1/completions",
         "data": "$request", "condition": "error.upstream_failure"}]}}}  # fmt: skip
    with broken.other_router(spec=spec) as router:
        request = {"model": "chat", "prompt": "hello", "max_tokens": 16, "stream": True}
        parts = assert_one_answer(await post(client, router.url, request), usage=False, text=True)
    assert len(content(parts)) == 16


@pytest.mark.parametrize(
    ("case", "request_extra", "router_args"),
    [
        ("n > 1", {"n": 2}, ()),
        ("logprobs", {"logprobs": True}, ()),
        ("switched off", {}, ("--continuation", "off")),
        ("fallback refuses", {"refuse": True}, ()),
    ],
)
async def test_where_it_cannot_continue_the_stream_ends_with_the_error_event(
    broken: Platform,
    client: aiohttp.ClientSession,
    case: str,
    request_extra: dict[str, object],
    router_args: tuple[str, ...],
) -> None:
    if request_extra.pop("refuse", False):
        faults(broken.fallback_llm, error_ratio=1.0, error_status=400)
    with broken.other_router(args=router_args) as router:
        body = await post(client, router.url + CHAT, chat(**request_extra))
        assert b"[DONE]" not in body, case
        error = orjson.loads(body.rpartition(b"event: error\ndata: ")[2])["error"]
        assert error["code"] == "upstream_unavailable", case
        assert "nexus_continuation" not in body.decode()
        assert "continued_by" not in router.process.output()


async def test_a_stream_the_primary_ends_whole_is_relayed_untouched(
    platform: Platform, client: aiohttp.ClientSession
) -> None:
    body = await post(client, platform.router.url + CHAT, chat())
    parts = assert_one_answer(body, usage=False)
    assert all("nexus_continuation" not in part for part in parts)
    assert parts[0]["model"] == "llama-8b"


async def test_a_client_leaving_mid_continuation_closes_the_fallback_at_once(
    broken: Platform, client: aiohttp.ClientSession
) -> None:
    faults(broken.fallback_llm, token_latency_ms=200)
    before = len(log_lines(broken.fallback.process.output()))
    response = await client.post(broken.router.url + CHAT, json=chat(max_tokens=200),
                                 headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    seen = b""
    while seen.count(b'"content"') < BROKEN_AFTER + 3:  # the role chunk, 5 + 2 tokens
        assert b"[DONE]" not in seen, seen
        assert b"event: error" not in seen, seen
        seen += await asyncio.wait_for(response.content.readuntil(b"\n\n"), timeout=5)
    response.close()  # the client leaves while the fallback streams its continuation
    left = time.monotonic()
    deadline = left + 5
    while not log_lines(broken.fallback.process.output())[before:]:
        assert time.monotonic() < deadline, "the fallback never saw its client leave"
        await asyncio.sleep(0.05)
    assert time.monotonic() - left < 2
    assert [e["status"] for e in log_lines(broken.fallback.process.output())[before:]] == [499]


async def test_a_long_answer_broken_late_is_continued_from_the_right_token(
    broken: Platform, client: aiohttp.ClientSession
) -> None:
    """600 tokens (~90 KB of events, past what the router holds unread) before the break."""
    faults(broken.primary_llm, break_stream_after=600)
    body = await post(client, broken.router.url + CHAT, chat(max_tokens=700))
    parts = assert_one_answer(body, usage=False)
    assert len(content(parts)) == 700
    (finish,) = [p for p in parts if p["choices"] and p["choices"][0]["finish_reason"]]
    assert finish["nexus_continuation"]["tokens_before"] == 600
