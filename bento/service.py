"""The Nexus CPU worker: a BentoML service that stands in for a vLLM predictor without a GPU.

It serves the routes both KServe vLLM runtimes serve — OpenAI under ``/v1`` (like
``kserve-vllmserver``) and ``/openai/v1`` (like ``kserve-huggingfaceserver``), KServe v1
``/v1/models/<m>:predict`` and v2 ``/v2/models/<m>/infer``, ``/health`` — and BentoML's
``/metrics`` carries vLLM's series (``vllm:num_requests_running``, ...), so dashboards and
alerts written for vLLM read it unchanged. The answers (deterministic text, SSE with
``usage``, token pacing, faults) come from ``llm_text`` beside it, shared with
``tests/support/cpu_llm.py``; this module is the HTTP face and the metrics.

Why an ASGI app mounted with ``@bentoml.asgi_app`` rather than ``@bentoml.api`` methods:
vLLM's wire shapes (SSE frames, ``{"error": {...}}`` bodies, ``:predict`` paths) are not
what BentoML's IO descriptors produce, and OpenAI clients must not see the difference.

Configuration is read from the environment when the app starts (never at import), so
``bentoml serve service:CpuWorker`` and ``python cpu_worker.py`` (which owns the listening
socket and so can also *refuse* connections) configure it alike: ``MODEL_NAME`` and the
``NEXUS_WORKER_*`` variables of ``ENV_FAULTS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

import bentoml
import orjson
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llm_text import (
    Completion,
    Faults,
    RequestError,
    answer_delay,
    check_model,
    completion_body,
    error_body,
    models_body,
    parse_completion,
    parse_json,
    stream_events,
    v1_predict_body,
    v2_infer_body,
)
from vllm_metrics import VllmMetrics

log = logging.getLogger("nexus.cpu_worker")

ENV_PREFIX = "NEXUS_WORKER_"


@dataclass(slots=True)
class WorkerFaults(Faults):
    """``Faults`` plus the one only a server owning its socket can do: refuse connections."""

    refuse: bool = False
    refuse_seconds: float = 0.0  # accept again by itself after this long (0: until cleared)


class Listener(Protocol):
    """The listening socket's owner (``cpu_worker.py``); absent under ``bentoml serve``."""

    admin_port: int | None

    def refuse(self) -> None: ...
    def accept(self) -> None: ...
    def reset(self, client: tuple[str, int]) -> None: ...
    def close_stream(self, client: tuple[str, int]) -> bool: ...


def faults_from_env(environ: Mapping[str, str]) -> WorkerFaults:
    """Faults at start: ``NEXUS_WORKER_<FIELD>`` for every field (``NEXUS_WORKER_HANG=1``)."""
    faults = WorkerFaults()
    changes: dict[str, Any] = {}
    for f in fields(faults):
        raw = environ.get(ENV_PREFIX + f.name.upper())
        if raw is None or raw == "":
            continue
        kind = type(getattr(faults, f.name))
        if kind is bool:
            changes[f.name] = raw.strip().lower() in {"1", "true", "yes", "on"}
        else:
            changes[f.name] = kind(raw)
    faults.update(changes)
    return faults


def _json(body: dict[str, Any], status: int = 200, **kw: Any) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", **kw)


def _error(exc: RequestError) -> Response:
    return _json(error_body(exc.status, exc.message, param=exc.param), exc.status)


class StreamBroken(Exception):
    """Raised inside a stream to drop it when no socket owner can close the connection."""


class Worker:
    """Per-process state: the served name, faults, metrics, the engine's sequence slots."""

    def __init__(self, *, model: str, faults: WorkerFaults, max_num_seqs: int) -> None:
        self.model = model
        self.faults = faults
        self.metrics = VllmMetrics(model)
        # vLLM runs at most max_num_seqs sequences; the rest wait (vllm:num_requests_waiting).
        self.slots = asyncio.Semaphore(max_num_seqs)
        self.listener: Listener | None = None
        self.requests = 0
        self.last_headers: dict[str, str] = {}
        self._clear_refuse: asyncio.TimerHandle | None = None

    async def apply_faults(self, request: Request) -> None:
        self.requests += 1
        self.last_headers = dict(request.headers)
        if self.faults.hang:
            await asyncio.sleep(3600)
        if self.faults.should_fail():
            raise RequestError(self.faults.error_status, "injected fault")

    def set_refusing(self) -> None:
        """Follow ``faults.refuse``: close or reopen the socket, arm the auto-clear timer."""
        if self.listener is None:
            return
        if self._clear_refuse is not None:
            self._clear_refuse.cancel()
            self._clear_refuse = None
        if not self.faults.refuse:
            self.listener.accept()
            return
        self.listener.refuse()
        if self.faults.refuse_seconds:
            loop = asyncio.get_running_loop()
            self._clear_refuse = loop.call_later(self.faults.refuse_seconds, self._end_refuse)

    async def follow_refuse(self) -> None:
        """``set_refusing`` on the event loop (a sync background task would run in a thread)."""
        self.set_refusing()

    def _end_refuse(self) -> None:
        self.faults.refuse = False
        self.set_refusing()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.metrics.waiting.inc()
        try:
            await self.slots.acquire()
        finally:
            self.metrics.waiting.dec()
        self.metrics.running.inc()
        try:
            yield
        finally:
            self.metrics.running.dec()
            self.slots.release()


def _worker(request: Request) -> Worker:
    worker: Worker = request.app.state.worker
    return worker


async def _completion(request: Request, *, chat: bool) -> Response:
    worker = _worker(request)
    try:
        body = parse_json(await request.body())
        check_model(body, worker.model)
        await worker.apply_faults(request)
        completion = parse_completion(body, chat=chat, garbled=worker.faults.garble)
    except RequestError as exc:
        return _error(exc)
    if completion.stream:
        return StreamingResponse(
            _stream(worker, request, completion), media_type="text/event-stream"
        )
    started = time.monotonic()
    async with worker.slot():
        delay = answer_delay(worker.faults, completion.max_tokens)
        if delay:
            await asyncio.sleep(delay)
    answer = completion_body(completion, model=worker.model, created=int(time.time()))
    worker.metrics.finished(completion, started=started, first_token=time.monotonic())
    return _json(answer)


async def _stream(worker: Worker, request: Request, c: Completion) -> AsyncIterator[bytes]:
    started = time.monotonic()
    first: float | None = None
    async with worker.slot():
        async for frame in stream_events(
            c, worker.faults, model=worker.model, created=int(time.time())
        ):
            if frame is None:
                client = request.client
                if (
                    worker.listener
                    and client
                    and worker.listener.close_stream((client.host, client.port))
                ):
                    return
                raise StreamBroken("break_stream_after reached")
            first = first or time.monotonic()
            yield frame
    worker.metrics.finished(c, started=started, first_token=first or time.monotonic())


async def chat(request: Request) -> Response:
    return await _completion(request, chat=True)


async def completions(request: Request) -> Response:
    return await _completion(request, chat=False)


async def models(request: Request) -> Response:
    return _json(models_body(_worker(request).model))


async def health(_: Request) -> Response:
    return Response(b"")


async def model_ready(request: Request) -> Response:
    """KServe v1 ``GET /v1/models/<m>`` and v2 ``GET /v2/models/<m>/ready``."""
    worker = _worker(request)
    name = request.path_params["name"]
    if name != worker.model:
        return _error(RequestError(404, f"The model `{name}` does not exist."))
    return _json({"name": name, "ready": True})


async def v1_predict(request: Request) -> Response:
    return await _kserve(request, v2=False)


async def v2_infer(request: Request) -> Response:
    return await _kserve(request, v2=True)


async def _kserve(request: Request, *, v2: bool) -> Response:
    worker = _worker(request)
    try:
        if request.path_params["name"] != worker.model:
            raise RequestError(404, f"The model `{request.path_params['name']}` does not exist.")
        body = parse_json(await request.body())
        await worker.apply_faults(request)
        answer = v2_infer_body(body, model=worker.model) if v2 else v1_predict_body(body)
    except RequestError as exc:
        return _error(exc)
    return _json(answer)


async def set_faults(request: Request) -> Response:
    worker = _worker(request)
    try:
        changes = parse_json(await request.body())
        if changes.get("refuse") and worker.listener is None:
            raise RequestError(501, "refuse needs cpu_worker.py, which owns the listening socket")
        worker.faults.update(changes)
    except RequestError as exc:
        return _error(exc)
    # Close the socket only after this answer has gone out on it.
    task = BackgroundTask(worker.follow_refuse) if "refuse" in changes else None
    return _json({"faults": worker.faults.as_dict()}, background=task)


async def stats(request: Request) -> Response:
    worker = _worker(request)
    return _json({"requests": worker.requests, "faults": worker.faults.as_dict(),
                  "last_headers": worker.last_headers})  # fmt: skip


class RefuseOpenConnections:
    """While refusing, reset requests that arrive on keep-alive connections opened before.

    Closing the listening socket stops new connections; a client's pooled connection would
    otherwise still get answers. The admin port stays open so faults can be cleared.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        worker: Worker | None = (
            getattr(scope["app"].state, "worker", None) if "app" in scope else None
        )
        if scope["type"] == "http" and worker is not None and worker.faults.refuse:
            listener, client, server = worker.listener, scope.get("client"), scope.get("server")
            if listener and client and (not server or server[1] != listener.admin_port):
                listener.reset(tuple(client))
                return
        await self.app(scope, receive, send)


def routes() -> list[Route]:
    openai = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
    ]
    prefixed = [Route("/openai" + r.path, r.endpoint, methods=r.methods) for r in openai]
    return [
        *openai,
        *prefixed,
        Route("/health", health, methods=["GET"]),
        Route("/v1/models/{name}:predict", v1_predict, methods=["POST"]),
        Route("/v1/models/{name}", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", v2_infer, methods=["POST"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/admin/faults", set_faults, methods=["POST"]),
        Route("/admin/stats", stats, methods=["GET"]),
    ]


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    worker = Worker(
        model=os.environ.get("MODEL_NAME", "chat"),
        faults=faults_from_env(os.environ),
        max_num_seqs=int(os.environ.get(ENV_PREFIX + "MAX_NUM_SEQS", "256")),
    )
    worker.listener = getattr(app.state, "listener", None)
    app.state.worker = worker
    if worker.faults.refuse:
        if worker.listener is None:
            log.warning("refuse at start ignored: only cpu_worker.py owns its listening socket")
        worker.set_refusing()
    log.info("serving model %r, faults %s", worker.model, worker.faults.as_dict())
    yield


# BentoML takes the ASGI app when the class is decorated, so the app object exists at
# import; everything it serves with is built in ``lifespan`` when the server starts.
app = Starlette(routes=routes(), lifespan=lifespan)
app.add_middleware(RefuseOpenConnections)


@bentoml.asgi_app(app)
@bentoml.service(
    name="nexus-cpu-worker",
    workers=1,
    # The hang fault must hang; BentoML's default request timeout would end it.
    traffic={"timeout": 24 * 3600},
)
class CpuWorker:
    """The vLLM stand-in; its routes are the mounted ``app`` above."""
