"""A deterministic, vLLM-shaped OpenAI server for machines without a GPU.

It speaks the routes a vLLM predictor serves (``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/models``, ``/health``, KServe ``/v1/models/<m>:predict`` and
``/v2/models/<m>/infer``), under an optional prefix (``/openai`` like
``kserve-huggingfaceserver``). Text is generated deterministically from the prompt, so
tests can assert on it; per-token latency and faults are settable at start and at run
time (``POST /admin/faults``), which is what tests, benchmarks and demos need from a
predictor they can break on purpose. What it answers comes from ``bento/llm_text.py``,
shared with the BentoML CPU worker; this module is only the aiohttp socket. It is test
support, not platform code: ``nexus.local`` models the cluster, not vLLM.

    python -m tests.support.cpu_llm --port 9000 --model chat --token-latency-ms 5  # repo root
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from aiohttp import web
from bento.llm_text import (
    Faults,
    RequestError,
    answer_delay,
    check_model,
    completion_body,
    embeddings_body,
    error_body,
    models_body,
    parse_completion,
    parse_json,
    stream_events,
    v1_predict_body,
    v2_infer_body,
)

__all__ = ["CpuLlm", "Faults", "build_app", "main"]


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    body = error_body(status, message, param=param)
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _json_response(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


class CpuLlm:
    """Request handlers; one instance per server, holding the served name and the faults."""

    def __init__(self, *, model: str, faults: Faults) -> None:
        self.model = model
        self.faults = faults
        self.requests = 0
        self.last_headers: dict[str, str] = {}

    async def _apply_faults(self, request: web.Request) -> None:
        self.requests += 1
        self.last_headers = dict(request.headers)
        if self.faults.hang:
            await asyncio.sleep(3600)
        if self.faults.should_fail():
            raise RequestError(self.faults.error_status, "injected fault")

    async def _json(self, request: web.Request) -> dict[str, Any]:
        body = parse_json(await request.read())
        check_model(body, self.model)
        return body

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = await self._json(request)
            await self._apply_faults(request)
            completion = parse_completion(body, chat=chat, garbled=self.faults.garble)
        except RequestError as exc:
            return _error(exc.status, exc.message, exc.param)
        created = int(time.time())
        if completion.stream:
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            async for frame in stream_events(
                completion, self.faults, model=self.model, created=created
            ):
                if frame is None:
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(frame)
            await response.write_eof()
            return response
        delay = answer_delay(self.faults, completion.max_tokens)
        if delay:
            await asyncio.sleep(delay)
        return _json_response(completion_body(completion, model=self.model, created=created))

    async def embeddings(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
            await self._apply_faults(request)
            return _json_response(embeddings_body(body, model=self.model))
        except RequestError as exc:
            return _error(exc.status, exc.message, exc.param)

    async def models(self, _: web.Request) -> web.Response:
        return _json_response(models_body(self.model))

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="")

    async def v1_predict(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            await self._apply_faults(request)
            return _json_response(v1_predict_body(parse_json(raw)))
        except RequestError as exc:
            if exc.status == 400:
                return _error(400, "body must be a JSON object with instances")
            return _error(exc.status, exc.message, exc.param)

    async def v2_infer(self, request: web.Request) -> web.Response:
        try:
            await self._apply_faults(request)
            body = parse_json(await request.read())
            return _json_response(v2_infer_body(body, model=self.model))
        except RequestError as exc:
            if exc.status == 400:
                return _error(400, "body must be a v2 inference request with inputs")
            return _error(exc.status, exc.message, exc.param)

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(orjson.loads(await request.read()))
        except orjson.JSONDecodeError as exc:
            return _error(400, f"bad faults: {exc}")
        except RequestError as exc:
            return _error(exc.status, exc.message, exc.param)
        return web.json_response({"faults": self.faults.as_dict()})

    async def stats(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "faults": self.faults.as_dict(),
                "last_headers": self.last_headers,
            }
        )


def build_app(*, model: str, faults: Faults, prefix: str = "") -> web.Application:
    llm = CpuLlm(model=model, faults=faults)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    for base in {prefix, ""} if prefix else {""}:
        app.router.add_post(f"{base}/v1/chat/completions", llm.chat)
        app.router.add_post(f"{base}/v1/completions", llm.completions)
        app.router.add_post(f"{base}/v1/embeddings", llm.embeddings)
        app.router.add_get(f"{base}/v1/models", llm.models)
    app.router.add_get("/health", llm.health)
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
