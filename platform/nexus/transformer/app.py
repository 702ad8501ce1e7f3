"""The transformer's ASGI application: a lean governed front with KServe's app behind it.

    request ─► Transformer ─┬─ OpenAI routes ──► auth · model · limits ─► predictor (edge client)
                            ├─ KServe v1/v2 ───► auth · model · limits ─► KServe app ─► ProxyModel
                            ├─ metadata ───────► auth · model ─► KServe app
                            ├─ /metrics          ours (+ KServe's families once it is loaded)
                            ├─ probes ─────────► answered here, or by KServe's app once built
                            └─ anything else     404: the route table is the allowlist (routes.py)

KServe's FastAPI app and its middleware cost several times the latency budget of a
transformer hop, so the OpenAI hot path is served here directly; KServe keeps its full
contract (arguments, v1/v2 routes, health, metrics) for everything else. Its app is built
on the first request that needs it, not at start: importing KServe is ~160 MiB of a
transformer's memory (``__main__``), and a local platform runs one transformer per model.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from nexus.auth import Principal
from nexus.config import GatewaySettings
from nexus.edge.asgi import (
    JSON,
    ClientDisconnected,
    ForeignApp,
    HTTPScope,
    Receive,
    Scope,
    Send,
    read_body,
    request_id_from,
    respond,
    respond_json,
    serve_lifespan,
    trace_id_from,
)
from nexus.edge.wire import MODELS_ROUTES
from nexus.errors import MethodNotAllowed, NexusError, RouteNotFound
from nexus.observability import AccessLog, TransformerMetrics, exposition
from nexus.transformer import kserve_routes, openai, routes
from nexus.transformer.components import Components, Exchange, is_fallback, open_components
from nexus.transformer.routes import Call, Keyed, Open, Routes
from nexus.transformer.streaming import relay_stream
from nexus.transformer.upstream import Upstream, public_body
from nexus.transformer.usage import Usage, body_usage

log = logging.getLogger("nexus.transformer")

UPSTREAM_PATHS: dict[openai.Kind, str] = {
    "chat": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}
KSERVE_MODELS_ROUTE = "/v2/models"
UNMATCHED = "unmatched"  # the route label of a path the table does not serve
DEFAULT_MAX_TOKENS = 512
FORWARDED = (b"traceparent", b"tracestate")
OpenParts = Callable[[GatewaySettings, TransformerMetrics], Awaitable[Components]]


class Transformer:
    """ASGI callable; KServe's app serves every route the transformer does not handle itself.

    ``build_kserve_app`` makes that app on first use, around the one ``Upstream`` the
    transformer's own routes use: one session, one breaker, one set of metrics for both.
    ``open_parts`` (what the lifespan opens) and ``read_usage`` (what a whole answer used)
    are the real ones unless a caller swaps a part: ``bench/ablated_transformer.py`` does,
    to measure what each governed part costs (``python -m bench costs``).
    """

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        metrics: TransformerMetrics,
        build_kserve_app: Callable[[Upstream], ForeignApp],
        access_log: AccessLog,
        open_parts: OpenParts = open_components,
        read_usage: Callable[[bytes], Usage | None] = body_usage,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.access_log = access_log
        self._build_kserve_app = build_kserve_app
        self._open_parts = open_parts
        self._read_usage = read_usage
        self._parts: Components | None = None
        self._kserve_app: ForeignApp | None = None
        self.routes = self._table()

    @property
    def parts(self) -> Components:
        if self._parts is None:
            raise RuntimeError(
                "the transformer serves requests only between lifespan start and stop"
            )
        return self._parts

    @property
    def kserve_app(self) -> ForeignApp:
        """KServe's app, built by the first request that needs it.

        The build is synchronous, so concurrent first requests never build it twice; it
        holds the event loop meanwhile (imports, then FastAPI's route set-up: the first
        metadata request took 2.9 s at load 6 on 2 cores, the next 0.07 s).
        """
        if self._kserve_app is None:
            self._kserve_app = self._build_kserve_app(self.parts.upstream)
            # KServe, FastAPI and pydantic leave a large heap behind; every full collection
            # walked all of it while serving (5 % of a request's CPU). Frozen objects are
            # never collected, so they are left out of every later collection.
            gc.freeze()
        return self._kserve_app

    # ── lifespan ────────────────────────────────────────────────────────────────────────
    async def startup(self) -> None:
        """Open the components once (``open_parts`` closes what it opened if a step fails)."""
        self._parts = await self._open_parts(self.settings, self.metrics)
        gc.freeze()  # the start-up heap, as for KServe's app when it is built

    async def shutdown(self) -> None:
        if self._parts is not None:
            for close in self._parts.close:
                await close()
            self._parts = None
        self._kserve_app = None
        self.access_log.flush()

    # ── dispatch ────────────────────────────────────────────────────────────────────────
    def _table(self) -> Routes:
        """Every route the transformer serves: path or pattern, guard, handler."""
        openai_routes = [
            Keyed(f"{prefix}{path}", f"{prefix}{path}", partial(self._openai, kind), "POST")
            for prefix in ("", "/openai")
            for kind, path in UPSTREAM_PATHS.items()
        ]
        return Routes(
            (
                *openai_routes,
                *(Keyed(path, path, self._models, "GET") for path in MODELS_ROUTES),
                Keyed(KSERVE_MODELS_ROUTE, KSERVE_MODELS_ROUTE, self._models, "GET"),
                Open("/metrics", self._metrics_page),
                Keyed(routes.V1_PREDICT, "/v1/models/{name}:predict", self._inference),
                Keyed(routes.V1_EXPLAIN, "/v1/models/{name}:explain", self._inference),
                Keyed(routes.V2_INFER, "/v2/models/{name}/infer", self._inference),
                Open("/", self._probe),
                Open(routes.OPEN_PROBES, self._probe),
                Keyed("/v2", "/v2", self._metadata),
                Keyed(routes.MODEL_METADATA, "/v2/models/{name}", self._metadata),
            )
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, startup=self.startup, shutdown=self.shutdown)
            return
        if scope["type"] != "http":
            await self.kserve_app(scope, receive, send)
            return
        found = self.routes.match(scope["path"])
        if found is None:
            await self._serve(scope, receive, send, UNMATCHED, None, _not_found)
            return
        route, model = found
        if isinstance(route, Open):
            await route.handler(scope, receive, send)
        else:
            await self._serve(scope, receive, send, route.label, model, partial(self._keyed, route))

    async def _keyed(self, route: Keyed, call: Call) -> None:
        """The guard of a ``Keyed`` route: its method, then a credential, then its handler."""
        if route.method is not None and call.scope["method"] != route.method:
            raise MethodNotAllowed(f"use {route.method} for {route.label}")
        await route.handler(call, await self._authenticate(call))

    async def _serve(
        self,
        scope: HTTPScope,
        receive: Receive,
        send: Send,
        route: str,
        model: str | None,
        handler: Callable[[Call], Awaitable[None]],
    ) -> None:
        """Run one handler and account for it (metrics, log line), whatever happens."""
        headers = dict(scope["headers"])
        request_id = request_id_from(headers.get(b"x-request-id"))
        exchange = Exchange(
            method=scope["method"],
            route=route,
            request_id=request_id,
            trace_id=trace_id_from(headers.get(b"traceparent")),
            started=time.perf_counter(),
            headers=[(b"x-request-id", request_id.encode())],
        )
        self.metrics.in_flight.inc()
        try:
            await handler(Call(scope, receive, send, headers, exchange, model))
        except NexusError as exc:
            exchange.error = exc.message
            if exchange.status == 0:
                exchange.status = exc.status
                await respond(
                    send,
                    exc.status,
                    public_body(exc),
                    [(b"content-type", JSON), *exc.headers(), *exchange.headers],
                )
        except ClientDisconnected:
            exchange.status = 499
        finally:
            self.metrics.in_flight.dec()
            self._account(exchange)

    def _account(self, ex: Exchange) -> None:
        elapsed = time.perf_counter() - ex.started
        labels: tuple[str, ...] = (ex.method, ex.route, str(ex.status))
        if self.metrics.tenant_label:
            labels = (*labels, ex.tenant or "")
        self.metrics.observe_request(labels, elapsed)
        fields: dict[str, Any] = {
            "request_id": ex.request_id,
            "trace_id": ex.trace_id,
            "method": ex.method,
            "path": ex.route,
            "status": ex.status,
            "duration_ms": round(elapsed * 1000, 3),
            "upstream": ex.upstream,
            "model": ex.model,
            "principal": ex.principal,
            "tokens": ex.tokens or None,
        }
        if ex.error:
            fields["error"] = ex.error
        self.access_log.write(fields)

    # ── handlers ────────────────────────────────────────────────────────────────────────
    async def _authenticate(self, call: Call) -> Principal:
        principal = await self.parts.governor.authenticate(
            call.headers.get(b"x-api-key"), call.headers.get(b"authorization")
        )
        call.ex.principal, call.ex.tenant = principal.id, principal.tenant
        return principal

    async def _metrics_page(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        body = exposition(self.metrics.registry)
        await respond(send, 200, body, [(b"content-type", b"text/plain; version=0.0.4")])

    async def _probe(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        """A probe, answered as KServe's app would answer it until that app is built
        (``kserve_routes.probe_answer``); by KServe's app afterwards, and for any other case."""
        if self._kserve_app is None:
            answer = kserve_routes.probe_answer(
                scope["method"], scope["path"], self.settings.public_models
            )
            if answer is not None:
                await respond_json(send, 200, answer, [])
                return
        await self.kserve_app(scope, receive, send)

    async def _metadata(self, call: Call, principal: Principal) -> None:
        await kserve_routes.metadata(
            self.kserve_app, self.parts, principal, call.scope, call.receive, call.send, call.ex,
            model=call.model,
        )  # fmt: skip

    async def _inference(self, call: Call, principal: Principal) -> None:
        await kserve_routes.inference(
            self.kserve_app, self.parts, principal, call.scope, call.receive, call.send, call.ex,
            model=call.model or "", max_body_bytes=self.settings.max_body_bytes,
            fallback=is_fallback(call.headers),
        )  # fmt: skip

    def _forward_headers(self, headers: dict[bytes, bytes], ex: Exchange) -> dict[str, str]:
        """What the predictor gets: request id and trace context, never the credentials."""
        out = {"Content-Type": "application/json", "X-Request-Id": ex.request_id}
        for name in FORWARDED:
            value = headers.get(name)
            if value:
                out[name.decode()] = value.decode("latin-1")
        return out

    async def _models(self, call: Call, principal: Principal) -> None:
        ex = call.ex
        models = [m for m in self.settings.public_models if principal.may_use(m)]
        ex.status = 200
        if ex.route == KSERVE_MODELS_ROUTE:
            # KServe's v2 ListModelsResponse shape, limited to what this credential may use.
            await respond_json(call.send, 200, {"models": models}, ex.headers)
            return
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "nexus"} for m in models]
        await respond_json(call.send, 200, {"object": "list", "data": data}, ex.headers)

    async def _openai(self, kind: openai.Kind, call: Call, principal: Principal) -> None:
        receive, send, headers, ex = call.receive, call.send, call.headers, call.ex
        limit = self.settings.max_body_bytes
        raw = await read_body(receive, limit=limit, content_length=headers.get(b"content-length"))
        request = openai.parse(kind, raw, default_max_tokens=DEFAULT_MAX_TOKENS)
        ex.model = request.model
        governor, upstream = self.parts.governor, self.parts.upstream
        admission = await governor.admit(
            principal, request.model, request.token_estimate, fallback=is_fallback(headers)
        )
        ex.headers += admission.headers()
        body = openai.upstream_body(request, raw, served_name=self.settings.served_model_name)
        path = self.settings.predictor_path_prefix + UPSTREAM_PATHS[kind]
        ex.upstream = upstream.name
        usage: Usage | None = None
        try:
            reply = await upstream.open("POST", path, body, self._forward_headers(headers, ex))
            if reply.streaming and reply.status == 200:
                usage = await relay_stream(
                    send=send,
                    receive=receive,
                    upstream=upstream,
                    reply=reply,
                    ex=ex,
                    metrics=self.metrics,
                    keep_usage_chunk=request.client_wants_usage,
                    prompt_estimate=request.prompt_estimate,
                )
            else:
                data = await upstream.read(reply)
                if reply.status < 300:
                    usage = self._read_usage(data)
                ex.status = reply.status
                await respond(
                    send, reply.status, data, [(b"content-type", reply.content_type), *ex.headers]
                )
        finally:
            await governor.settle(admission, usage)
            if usage is not None:
                ex.tokens = {"prompt": usage.prompt, "completion": usage.completion,
                             "total": usage.total}  # fmt: skip


async def _not_found(call: Call) -> None:
    raise RouteNotFound(f"no route {call.scope['method']} {_printable(call.scope['path'])}")


def _printable(path: str) -> str:
    """A client-chosen path, cut and stripped of control characters for an error message."""
    return "".join(c for c in path[:200] if c.isprintable())
