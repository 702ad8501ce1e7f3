"""The router's HTTP face: a plain ASGI app (no framework on the hot path).

KServe's routes: ``/readyz`` answers 200, or 503 ``shutting down`` once SIGTERM started
the drain; every other path and method is the graph entry (the path is ignored, the body
is the root node's input). Replies follow KServe: a router error is
``{"error": "Failed to process request", "cause": ...}`` with ``application/json``; a
step's body gets ``Content-Type: application/json`` only when it is valid JSON, otherwise
a sniffed type as Go's server would set.

Nexus extensions: ``GET /metrics`` (Prometheus text), the ``x-nexus-graph-step`` header
naming the step that produced the answer, one JSON log line per request, and SSE relay:
a streaming reply is forwarded chunk by chunk, and an upstream read stops as soon as the
client goes away (so a model does not keep generating for nobody). Body reading, answers
and the relay are the transformer's too (``nexus.edge.asgi``, ``nexus.edge.sse``).

``routerTimeouts``: ``serverRead`` bounds reading the request body and ``serverWrite``
the whole exchange (Go's 60 s defaults for both); ``serverIdle`` is the keep-alive
timeout (Go's 180 s default) set on uvicorn. Go closes the connection when a server
deadline passes; an ASGI app cannot close without answering, so before the first byte
the router answers its 500 error body, a stream in flight ends with ``event: error``
(logged and counted as 504), and a buffered answer whose head is already out is left
unfinished, so that uvicorn closes the connection (also 504; never a second head).

Method and path (issue 11; a departure from KServe, whose router runs the graph for
every method and path): only ``POST`` runs the graph. ``GET /v1/models`` and
``GET /openai/v1/models`` list the models of the graph's steps (``listing.py``); any
other method is a 405 in the OpenAI error shape with an ``Allow`` header. ``--any-method``
restores KServe's behaviour (the conformance tests run with it). Kubernetes probes are not
affected: KServe gives the router pod an HTTP GET readiness probe on ``/readyz`` only
(``pkg/constants/constants.go`` ``GetRouterReadinessProbe``, used by ``raw_ig.go`` and
``knative_reconciler.go``; ``cmd/router/main.go`` registers the graph handler on ``/``
for every method; kserve commit aaac4e29, after v0.20.0).

Faults mid-stream (issue 11): when a relayed stream breaks after its headers were sent,
the client gets ``event: error`` with an OpenAI error body and no ``data: [DONE]``; the
log line and ``nexus_router_requests_total`` record 502 (the status the exchange amounts
to; the headers already said 200). When the client leaves, the upstream connection is
closed at once, so the step sees its client go even while no token is flowing; the log
line and the counter record 499. A Sequence with conditional steps after the streaming one
continues a broken stream instead (``continuation.py``); the log line then names the steps
that continued it (``continued_by``).

Limits (issue 12; KServe's router has none): a body longer than ``--max-body-bytes``
(default 1 MiB, the transformer's ``GATEWAY_MAX_BODY_BYTES`` default) is answered 413
before it is read when its ``Content-Length`` says so, or as soon as a chunked body
passes the limit. When the graph has a Switch node, whose conditions read the request,
a request nested deeper than 128 levels is answered 400 before any node runs. Error
bodies keep KServe's shape. ``X-Request-Id`` is logged only when it is a sane token (as
the transformer does), otherwise a fresh id is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nexus.edge.asgi import (
    ClientDisconnected,
    Headers,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    Receive,
    Scope,
    Send,
    answer,
    header,
    read_body,
    request_id_from,
    serve_lifespan,
)
from nexus.edge.failures import TransportError
from nexus.edge.nesting import DEFAULT_MAX_NESTING, deeper_than
from nexus.edge.sse import CLIENT_CLOSED, relay
from nexus.edge.wire import MODELS_ROUTES, STEP_HEADER
from nexus.errors import MethodNotAllowed, NexusError, UpstreamFailure, UpstreamTimeout
from nexus.observability import AccessLog
from nexus.router.continuation import Continuation
from nexus.router.executor import Executor
from nexus.router.graph import ROOT_NODE
from nexus.router.headers import HeaderPropagation
from nexus.router.listing import ModelListing
from nexus.router.metrics import RouterMetrics, now
from nexus.router.reply import GraphError, Reply, request_too_deep, sniff_content_type

JSON = b"application/json"
DEFAULT_SERVER_SECONDS = 60
DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # the transformer's GATEWAY_MAX_BODY_BYTES default

log = logging.getLogger("nexus.router.access")


@dataclass
class RouterState:
    """Mutable process state the signal handler flips; owned by ``main()``."""

    draining: bool = False


class RouterApp:
    """ASGI callable serving one graph."""

    def __init__(
        self,
        *,
        executor: Executor,
        propagation: HeaderPropagation,
        metrics: RouterMetrics,
        state: RouterState,
        access_log: AccessLog,
        listing: ModelListing | None = None,
        read_seconds: float | None = DEFAULT_SERVER_SECONDS,
        write_seconds: float | None = DEFAULT_SERVER_SECONDS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_nesting: int = DEFAULT_MAX_NESTING,
    ) -> None:
        self.executor = executor
        self.propagation = propagation
        self.metrics = metrics
        self.state = state
        self.access_log = access_log
        # None: KServe's behaviour, every method and path runs the graph (--any-method).
        self.listing = listing
        self.read_seconds = read_seconds
        self.write_seconds = write_seconds
        self.max_body_bytes = max_body_bytes
        self.max_nesting = max_nesting
        # Only Switch conditions read the request; other graphs pass it on untouched.
        self.inspects_request = any(
            node.router_type == "Switch" for node in executor.graph.nodes.values()
        )
        self.log_requests = log.isEnabledFor(logging.INFO)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/readyz":
                await self._ready(send)
            elif path == "/metrics" and scope["method"] == "GET":
                await _send(send, 200, generate_latest(self.metrics.registry),
                            CONTENT_TYPE_LATEST.encode())  # fmt: skip
            elif self.listing is not None and (scope["method"] != "POST" or path in MODELS_ROUTES):
                await self._not_graph(scope, send)
            else:
                await self._graph(scope, receive, send)
        elif scope["type"] == "lifespan":
            await serve_lifespan(receive, send, startup=self._startup, shutdown=self._shutdown)

    async def _startup(self) -> None:
        await self.executor.caller.start()
        if self.listing is not None:
            await self.listing.start()

    async def _shutdown(self) -> None:
        await self.executor.caller.close()
        if self.listing is not None:
            await self.listing.close()
        self.access_log.flush()

    async def _ready(self, send: Send) -> None:
        if self.state.draining:
            await _send(send, 503, b"shutting down\n", b"text/plain; charset=utf-8")
        else:
            await _send(send, 200, b"", None)

    async def _not_graph(self, scope: HTTPScope, send: Send) -> None:
        """The model listing, or a 405: a request that is not a graph run."""
        assert self.listing is not None
        started = now()
        method, path = scope["method"], scope["path"]
        if path in MODELS_ROUTES and method == "GET":
            headers = self.propagation.select(scope["headers"])
            status, body = await self.listing.models(headers)
            await _send(send, status, body, JSON)
        else:
            allow = b"GET" if path in MODELS_ROUTES else b"POST"
            error = MethodNotAllowed(
                f"{method} is not supported on {path}; "
                + ("use GET to list models" if allow == b"GET" else "send the request as a POST")
            )
            status = error.status
            await _send(send, status, error.body_bytes(), JSON, extra=[(b"allow", allow)])
        elapsed = now() - started
        self.metrics.observe_request(status, elapsed)
        self._log(scope, scope["headers"], status, elapsed, "", False)

    async def _graph(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        started = now()
        headers = scope["headers"]
        status = 500
        step = ""
        streamed = False
        # A buffered answer's head is out, its body not yet: the server can be waiting for
        # the client to read (uvicorn's send drains before it writes), so serverWrite can
        # pass between the two. No second head may follow then.
        head_sent = False
        error = ""
        continued = ""
        read_at, write_at = self._deadlines()
        try:
            # One timeout context for both server deadlines instead of two nested ones:
            # it fires at the read deadline while the body is read, then is moved to the
            # write deadline. Same errors at the same moments, one timer less per request.
            async with asyncio.timeout_at(read_at) as deadline:
                try:
                    body = await self._read(scope, receive)
                    if write_at != read_at:
                        deadline.reschedule(write_at)
                    reply = await self.executor.run_node(
                        ROOT_NODE, body, self.propagation.select(headers)
                    )
                    content_type = None
                    if reply.stream is None:
                        content_type = (
                            JSON if reply.is_valid_json else sniff_content_type(reply.body)
                        )
                except GraphError as exc:
                    status, step = exc.status, exc.step
                    # After a 413 the rest of the body is not worth reading: close instead.
                    head, rest = _answer(status, exc.body(), JSON, step, close=status == 413)
                    await send(head)
                    head_sent = True
                    await send(rest)
                else:
                    status, step = reply.status, reply.step
                    if reply.stream is None:
                        head, rest = _answer(status, reply.body, content_type, step,
                                             extra=reply.headers)  # fmt: skip
                        await send(head)
                        head_sent = True
                        await send(rest)
                    else:
                        streamed = True
                        # The head goes out at once: the histogram times it, as KServe's
                        # buffered answers are timed at their (only) write.
                        self.metrics.request_seconds.observe(now() - started)
                        relayed = await relay(
                            reply.chunks(),
                            receive=receive,
                            send=send,
                            head=_stream_head(reply),
                            on_break=partial(self._broken, reply.step),
                            render=NexusError.body_bytes,
                        )
                        status = relayed.status
                        error = relayed.error.message if relayed.error else ""
                        if isinstance(reply.source, Continuation):
                            continued = ",".join(reply.source.continued_by)
        except ClientDisconnected:
            status = CLIENT_CLOSED
        except TimeoutError:
            if head_sent:
                # Go's server closes the connection at its deadline; returning with the
                # answer unfinished makes uvicorn close it (httptools_impl.py, run_asgi).
                status = 504
                error = "router deadline (routerTimeouts serverWrite) exceeded"
            elif not streamed:
                status = 500
                deadline_error = GraphError(
                    "router deadline (routerTimeouts serverRead/serverWrite) exceeded"
                )
                await _send(send, status, deadline_error.body(), JSON, step)
            else:
                # serverWrite ended a stream in flight: say so in the stream (a blank line
                # first ends an event cut in half) and record 504 rather than the 200.
                status = 504
                cut = UpstreamTimeout("router deadline (routerTimeouts serverWrite) exceeded")
                error = cut.message
                event = b"\n\nevent: error\ndata: " + cut.body_bytes() + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": False})
        finally:
            elapsed = now() - started
            if streamed:
                # The duration histogram was observed at the stream's first byte.
                self.metrics.count_request(status)
            else:
                self.metrics.observe_request(status, elapsed)
            self._log(scope, headers, status, elapsed, step, streamed, error, continued)

    async def _read(self, scope: HTTPScope, receive: Receive) -> bytes:
        """The request body within the size limit, checked for nesting when conditions read it."""
        declared = header(scope["headers"], b"content-length")
        try:
            body = await read_body(receive, limit=self.max_body_bytes, content_length=declared)
        except NexusError as exc:  # PayloadTooLarge (413), InvalidRequest (400)
            raise GraphError(exc.message, status=exc.status) from None
        if self.inspects_request and deeper_than(body, self.max_nesting):
            raise GraphError(request_too_deep(self.max_nesting), status=400)
        return body

    def _deadlines(self) -> tuple[float | None, float | None]:
        """Loop-clock deadlines: (while reading the body, for the whole exchange)."""
        loop_now = asyncio.get_running_loop().time()
        write_at = None if self.write_seconds is None else loop_now + self.write_seconds
        read_at = None if self.read_seconds is None else loop_now + self.read_seconds
        if read_at is None or (write_at is not None and write_at < read_at):
            read_at = write_at  # the write deadline also bounds the read
        return read_at, write_at

    def _log(
        self,
        scope: HTTPScope,
        headers: Headers,
        status: int,
        elapsed: float,
        step: str,
        streamed: bool,
        error: str = "",
        continued: str = "",
    ) -> None:
        """The request's JSON log line (batched with the others of this loop tick)."""
        if not self.log_requests:
            return
        fields = {
            "request_id": request_id_from(header(headers, b"x-request-id")),
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "graph_step": step,
            "stream": streamed,
        }
        if error:
            fields["error"] = error
        if continued:  # the steps that continued a broken stream (continuation.py)
            fields["continued_by"] = continued
        self.access_log.write(fields)

    def _broken(self, step: str, exc: TransportError) -> UpstreamFailure:
        """The error a stream the step broke after its first byte ends with."""
        logging.getLogger("nexus.router").warning(
            "stream from step %s ended early: %s", step, exc.reason
        )
        return UpstreamFailure(f"the stream from step {step} ended early")


def _stream_head(reply: Reply) -> HTTPResponseStartEvent:
    return {
        "type": "http.response.start",
        "status": reply.status,
        "headers": [
            (b"content-type", reply.content_type.encode("latin-1")),
            (b"cache-control", b"no-cache"),
            (STEP_HEADER, reply.step.encode("latin-1")),
        ],
    }


def _answer(
    status: int,
    body: bytes,
    content_type: bytes | None,
    step: str = "",
    *,
    close: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> tuple[HTTPResponseStartEvent, HTTPResponseBodyEvent]:
    """A whole answer with the router's headers (KServe's content type, the step taken)."""
    headers: Headers = list(extra) if extra else []
    if close:
        headers.append((b"connection", b"close"))
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if step:
        headers.append((STEP_HEADER, step.encode("latin-1")))
    return answer(status, body, headers)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes | None,
    step: str = "",
    *,
    close: bool = False,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    head, rest = _answer(status, body, content_type, step, close=close, extra=extra)
    await send(head)
    await send(rest)
