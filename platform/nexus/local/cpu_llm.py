"""A deterministic, vLLM-shaped OpenAI server for machines without a GPU.

It speaks the routes a vLLM predictor serves (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``, ``/health``, KServe ``/v1/models/<m>:predict`` and
``/v2/models/<m>/infer``), under an optional prefix (``/openai`` like
``kserve-huggingfaceserver``). Text is generated deterministically from the prompt, so
tests can assert on it; per-token latency and faults are settable at start and at run
time (``POST /admin/faults``), which is what tests, benchmarks and demos need from a
predictor they can break on purpose.

    python -m nexus.local.cpu_llm --port 9000 --model chat --token-latency-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

WORDS = (
    "the model answers every prompt with calm deterministic words drawn from a small "
    "vocabulary so that tests can predict each token while streaming stays realistic"
).split()


@dataclass(slots=True)
class Faults:
    """What the server does wrong on purpose; changed at run time by ``POST /admin/faults``."""

    error_ratio: float = 0.0
    error_status: int = 500
    hang: bool = False
    token_latency_ms: float = 0.0
    first_token_latency_ms: float = 0.0
    break_stream_after: int = 0  # drop the connection after this many streamed tokens


def generate(prompt: str, max_tokens: int) -> list[str]:
    """The tokens this server answers ``prompt`` with: a pure function of its inputs."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)  # noqa: S311 - determinism, not security
    return [rng.choice(WORDS) for _ in range(max_tokens)]


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def _prompt_of_chat(messages: list[dict[str, Any]]) -> str:
    parts = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


def _error(status: int, message: str) -> web.Response:
    body = {"object": "error", "message": message, "type": "BadRequestError", "code": status}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


class CpuLlm:
    """Request handlers; one instance per server, holding the served name and the faults."""

    def __init__(self, *, model: str, faults: Faults) -> None:
        self.model = model
        self.faults = faults
        self.requests = 0
        self.last_headers: dict[str, str] = {}
        # vLLM's metric names, so dashboards and the canary analysis read the same here.
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        self.successes = Counter("vllm:request_success", "Finished requests", labels,
                                 registry=self.registry)  # fmt: skip
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens", labels,
                                     registry=self.registry)  # fmt: skip
        self.generation_tokens = Counter("vllm:generation_tokens", "Generated tokens", labels,
                                         registry=self.registry)  # fmt: skip

    async def _apply_faults(self, request: web.Request) -> web.Response | None:
        self.requests += 1
        self.last_headers = dict(request.headers)
        if self.faults.hang:
            await asyncio.sleep(3600)
        if self.faults.error_ratio and random.random() < self.faults.error_ratio:  # noqa: S311
            return _error(self.faults.error_status, "injected fault")
        return None

    async def _json(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        model = body.get("model", self.model)
        if model != self.model:
            return _error(404, f"The model `{model}` does not exist.")
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        fault = await self._apply_faults(request)
        if fault is not None:
            return fault
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                return _error(400, "messages must be a non-empty list")
            prompt = _prompt_of_chat(messages)
        else:
            raw = body.get("prompt", "")
            prompt = raw if isinstance(raw, str) else " ".join(map(str, raw))
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 16
        tokens = generate(prompt, int(max_tokens))
        usage = {
            "prompt_tokens": count_tokens(prompt),
            "completion_tokens": len(tokens),
            "total_tokens": count_tokens(prompt) + len(tokens),
        }
        self.successes.labels(self.model).inc()
        self.prompt_tokens.labels(self.model).inc(usage["prompt_tokens"])
        self.generation_tokens.labels(self.model).inc(len(tokens))
        created = int(time.time())
        rid = ("chatcmpl-" if chat else "cmpl-") + hashlib.sha256(prompt.encode()).hexdigest()[:16]
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return await self._stream(request, rid, created, tokens, usage, chat, include_usage)
        await self._sleep_for(len(tokens))
        text = " ".join(tokens)
        choice: dict[str, Any]
        if chat:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
        else:
            choice = {"index": 0, "text": text, "finish_reason": "length"}
        answer = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _sleep_for(self, n_tokens: int) -> None:
        delay = self.faults.first_token_latency_ms + self.faults.token_latency_ms * n_tokens
        if delay:
            await asyncio.sleep(delay / 1000)

    async def _stream(
        self,
        request: web.Request,
        rid: str,
        created: int,
        tokens: list[str],
        usage: dict[str, int],
        chat: bool,
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        if self.faults.first_token_latency_ms:
            await asyncio.sleep(self.faults.first_token_latency_ms / 1000)
        for i, token in enumerate(tokens):
            piece = token if i == 0 else " " + token
            last = i == len(tokens) - 1
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if last else None}
            if chat:
                choice["delta"] = (
                    {"content": piece} if i else {"role": "assistant", "content": piece}
                )
            else:
                choice["text"] = piece
            chunk = {"id": rid, "object": obj, "created": created, "model": self.model,
                     "choices": [choice]}  # fmt: skip
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if self.faults.break_stream_after and i + 1 >= self.faults.break_stream_after:
                assert request.transport is not None
                request.transport.close()
                return response
            if self.faults.token_latency_ms and not last:
                await asyncio.sleep(self.faults.token_latency_ms / 1000)
        if include_usage:
            chunk = {"id": rid, "object": obj, "created": created, "model": self.model,
                     "choices": [], "usage": usage}  # fmt: skip
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if isinstance(body, web.Response):
            return body
        fault = await self._apply_faults(request)
        if fault is not None:
            return fault
        inputs = body.get("input")
        items = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(items, list) or not items:
            return _error(400, "input must be a string or a non-empty list")
        data = []
        for i, item in enumerate(items):
            digest = hashlib.sha256(str(item).encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [b / 255 for b in digest[:8]]})  # fmt: skip
        n = sum(count_tokens(str(i)) for i in items)
        answer = {"object": "list", "data": data, "model": self.model,
                  "usage": {"prompt_tokens": n, "total_tokens": n}}  # fmt: skip
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def models(self, _: web.Request) -> web.Response:
        answer = {"object": "list",
                  "data": [{"id": self.model, "object": "model", "owned_by": "nexus"}]}  # fmt: skip
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="")

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")

    async def v1_predict(self, request: web.Request) -> web.Response:
        body = await request.read()
        fault = await self._apply_faults(request)
        if fault is not None:
            return fault
        try:
            instances = orjson.loads(body).get("instances")
        except (orjson.JSONDecodeError, AttributeError):
            return _error(400, "body must be a JSON object with instances")
        answer = {"predictions": [" ".join(generate(str(i), 4)) for i in instances or []]}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def v2_infer(self, request: web.Request) -> web.Response:
        fault = await self._apply_faults(request)
        if fault is not None:
            return fault
        try:
            body = orjson.loads(await request.read())
            inputs = body["inputs"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, "body must be a v2 inference request with inputs")
        outputs = []
        for tensor in inputs:
            texts = [" ".join(generate(str(v), 4)) for v in tensor.get("data", [])]
            outputs.append({"name": "output-" + str(tensor.get("name")), "datatype": "BYTES",
                            "shape": [len(texts)], "data": texts})  # fmt: skip
        answer = {"model_name": self.model, "id": body.get("id") or "0", "outputs": outputs}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            changes = orjson.loads(await request.read())
            for key, value in changes.items():
                if not hasattr(self.faults, key):
                    return _error(400, f"unknown fault {key!r}")
                setattr(self.faults, key, type(getattr(self.faults, key))(value))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
            return _error(400, f"bad faults: {exc}")
        return web.json_response({"faults": _faults(self)})

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"requests": self.requests, "faults": _faults(self), "last_headers": self.last_headers}
        )


def _faults(llm: CpuLlm) -> dict[str, Any]:
    f = llm.faults
    return {
        "error_ratio": f.error_ratio,
        "error_status": f.error_status,
        "hang": f.hang,
        "token_latency_ms": f.token_latency_ms,
        "first_token_latency_ms": f.first_token_latency_ms,
        "break_stream_after": f.break_stream_after,
    }


def build_app(*, model: str, faults: Faults, prefix: str = "") -> web.Application:
    llm = CpuLlm(model=model, faults=faults)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    for base in {prefix, ""} if prefix else {""}:
        app.router.add_post(f"{base}/v1/chat/completions", llm.chat)
        app.router.add_post(f"{base}/v1/completions", llm.completions)
        app.router.add_post(f"{base}/v1/embeddings", llm.embeddings)
        app.router.add_get(f"{base}/v1/models", llm.models)
    app.router.add_get("/health", llm.health)
    app.router.add_get("/metrics", llm.metrics)
    app.router.add_post(f"/v1/models/{model}:predict", llm.v1_predict)
    app.router.add_post(f"/v2/models/{model}/infer", llm.v2_infer)
    app.router.add_post("/admin/faults", llm.set_faults)
    app.router.add_get("/admin/stats", llm.stats)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--model", default="chat", help="served model name")
    parser.add_argument("--prefix", default="", help="extra route prefix, e.g. /openai")
    parser.add_argument("--token-latency-ms", type=float, default=0.0)
    parser.add_argument("--first-token-latency-ms", type=float, default=0.0)
    parser.add_argument("--error-ratio", type=float, default=0.0)
    args = parser.parse_args(argv)
    faults = Faults(
        error_ratio=args.error_ratio,
        token_latency_ms=args.token_latency_ms,
        first_token_latency_ms=args.first_token_latency_ms,
    )
    app = build_app(model=args.model, faults=faults, prefix=args.prefix)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
