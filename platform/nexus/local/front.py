"""An InferenceService's front door: what Knative's route does for ``<isvc>.<ns>.svc``.

A path-preserving async reverse proxy that draws a revision by weight for every request
and relays the answer as it arrives (SSE streams included). The response carries
``x-nexus-revision`` so clients and tests can tell which revision answered. Routes are
replaced atomically by the controller when traffic moves; requests in flight finish on
the revision they started on, as with Knative.

Every request runs under the entry component's timeout (``set_backends(timeout=)``), as
Knative's queue-proxy runs it: a total timer from the request's arrival that ends
streams too; before the answer starts, a 504 with body ``request timeout``; after, the
same text is written into the answer and it ends (``pkg/http/handler/timeout.go`` and
``pkg/queue/sharedmain/handlers.go``, knative/serving knative-v1.21.0).

Knative's tag routing is served too: a request whose Host is ``latest-<isvc>-predictor...``
or ``prev-<isvc>-predictor...`` (``nexus.release.tag_routing``) goes to that tagged revision's
predictor, whatever its percent, 0 included; a tag no ready revision carries is a 404, as
Knative answers for a host it has no route for. That is how a release reaches a candidate
at ``canaryTrafficPercent: 0`` (the quality gate). The untagged predictor host,
``<isvc>-predictor...``, goes to the predictor of a revision drawn by weight, as Knative's
route of the predictor's Knative Service does, past the transformer: how the quality gate
reaches a judge InferenceService (``quality.judge``).

It also reports what Knative's queue-proxy reports for every revision
(``RevisionMetrics``): in a cluster the transformer does not know which predictor revision
answered, so the canary analysis, the alert rules and the dashboard read the
queue-proxy's request histogram (``docs/canary-signal.md``), and locally the front
exports it under the same name, unit, buckets and labels.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram

from nexus.manifests.metric_names import QUEUE_PROXY_DURATION, QUEUE_PROXY_STATUS_LABEL
from nexus.release import tag_routing

REVISION_HEADER = "x-nexus-revision"
# Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded; Host is set by the client.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip


# Knative's revision-timeout-seconds default (pkg/apis/config/defaults.go,
# DefaultRevisionTimeoutSeconds, knative-v1.21.0), for components that set no timeout.
DEFAULT_TIMEOUT_SECONDS = 300.0
# What the queue-proxy writes when the timer fires (handlers.go, NewTimeoutHandler's msg).
TIMEOUT_BODY = b"request timeout"


@dataclass(frozen=True, slots=True)
class Backend:
    revision: str
    base_url: str
    percent: int
    tag: tag_routing.Tag | None = None  # Knative's traffic tag, reachable by host
    predictor_url: str | None = None  # where the tag host leads: the predictor itself


def choose(backends: Sequence[Backend], draw: float) -> Backend | None:
    """The backend whose cumulative weight covers ``draw`` in [0, 100)."""
    total = 0
    for backend in backends:
        total += backend.percent
        if draw < total:
            return backend
    return None


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "service_unavailable", "code": status}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


# The labels a cluster's series carry: the PodMonitor's `isvc` and `revision`, and the
# queue-proxy's one attribute, the status code.
QUEUE_PROXY_LABELS = ("isvc", "revision", QUEUE_PROXY_STATUS_LABEL)
# Knative's own bounds, in seconds (knative/serving knative-v1.21.0,
# pkg/queue/request_metric.go, latencyBounds).
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)


class RevisionMetrics:
    """The queue-proxy's request histogram (``QUEUE_PROXY_DURATION``) per revision.

    Knative 1.21 records every non-probe request once, after its answer, with the status
    code; a panicking handler counts as 500 (pkg/queue/request_metric.go). The front
    records unreachable revisions as the 503 the client gets.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._duration = Histogram(
            QUEUE_PROXY_DURATION.removesuffix("_seconds"),
            "The duration of task execution",
            QUEUE_PROXY_LABELS,
            unit="seconds",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )

    def observe(self, isvc: str, revision: str, status: int, seconds: float) -> None:
        self._duration.labels(isvc, revision, str(status)).observe(seconds)


class Front:
    """One InferenceService's weighted proxy; ``session`` is shared across fronts."""

    def __init__(
        self,
        *,
        isvc: str,
        session: aiohttp.ClientSession,
        metrics: RevisionMetrics,
        rng: random.Random | None = None,
    ) -> None:
        self.isvc = isvc
        self.session = session
        self.metrics = metrics
        self.rng = rng or random.Random()  # noqa: S311 - traffic split, not security
        self.backends: tuple[Backend, ...] = ()
        self.timeout: float | None = DEFAULT_TIMEOUT_SECONDS

    def set_backends(
        self, backends: Sequence[Backend], *, timeout: float | None = DEFAULT_TIMEOUT_SECONDS
    ) -> None:
        """New routes; ``timeout`` is the queue-proxy's total timer (``None``: none)."""
        self.backends = tuple(b for b in backends if b.percent > 0 or b.tag)
        self.timeout = timeout

    def _pick(self, request: web.Request) -> tuple[Backend, str] | web.Response:
        """The backend and base URL a request goes to: by tag host, else by weight (to the
        predictor itself for the predictor's host)."""
        tag = tag_routing.parse_host(request.host, self.isvc)
        if tag is None:
            backend = choose(self.backends, self.rng.random() * 100)
            if backend is None:
                return _error(503, f"InferenceService {self.isvc} has no ready revision")
            if not tag_routing.names_predictor(request.host, self.isvc):
                return backend, backend.base_url
            if backend.predictor_url is None:
                return _error(503, f"the predictor of {backend.revision} has no port yet")
            return backend, backend.predictor_url
        tagged = next((b for b in self.backends if b.tag == tag and b.predictor_url), None)
        if tagged is None or tagged.predictor_url is None:
            return _error(404, f"no ready revision of {self.isvc} is tagged {tag}")
        return tagged, tagged.predictor_url

    async def handle(self, request: web.Request) -> web.StreamResponse:
        picked = self._pick(request)
        if isinstance(picked, web.Response):
            return picked
        backend, base_url = picked
        started = time.perf_counter()
        response: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(self.timeout):
                headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
                url = base_url + request.rel_url.raw_path_qs
                body = await request.read()
                try:
                    upstream = await self.session.request(
                        request.method, url, headers=headers, data=body, allow_redirects=False
                    )
                except aiohttp.ClientError as exc:
                    elapsed = time.perf_counter() - started
                    self.metrics.observe(self.isvc, backend.revision, 503, elapsed)
                    return _error(503, f"revision {backend.revision} is unreachable: {exc}")
                async with upstream:
                    out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
                    out[REVISION_HEADER] = backend.revision
                    response = web.StreamResponse(status=upstream.status, headers=out)
                    await response.prepare(request)
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
        except TimeoutError:
            self.metrics.observe(self.isvc, backend.revision, 504, time.perf_counter() - started)
            if response is None or not response.prepared:
                return web.Response(status=504, body=TIMEOUT_BODY, content_type="text/plain")
            await response.write(TIMEOUT_BODY)
            await response.write_eof()
            return response
        elapsed = time.perf_counter() - started
        self.metrics.observe(self.isvc, backend.revision, upstream.status, elapsed)
        return response


def front_app(front: Front) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", front.handle)
    return app
