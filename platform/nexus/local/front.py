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

It also reports what Knative's queue-proxy reports for every revision
(``RevisionMetrics``): in a cluster the transformer does not know which predictor revision
answered, so the canary analysis, the alert rules and the dashboard read the
queue-proxy's series, and locally the front exports them under the same names.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric, UnknownMetricFamily

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


# Knative's queue-proxy: its labels, and its latency buckets in milliseconds.
QUEUE_PROXY_LABELS = ("isvc", "revision", "configuration_name", "revision_name",
                      "response_code", "response_code_class")  # fmt: skip
# fmt: off
LATENCY_BUCKETS_MS = (5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 350, 400, 450, 500,
                      600, 700, 800, 900, 1000, 2000, 5000, 10000, 20000, 50000, 100000)
# fmt: on


class RevisionMetrics:
    """``revision_app_request_count`` and ``revision_app_request_latencies`` per revision.

    Named and labelled as the queue-proxy's (``revision_name``, ``response_code_class``
    ...), plus the ``isvc`` and ``revision`` labels a cluster's PodMonitor adds. The count
    is exposed without the ``_total`` suffix that ``prometheus_client`` gives counters,
    as the queue-proxy does, hence a collector of its own.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._counts: collections.Counter[tuple[str, ...]] = collections.Counter()
        self._latency = Histogram(
            "revision_app_request_latencies",
            "The response time in millisecond",
            QUEUE_PROXY_LABELS,
            buckets=LATENCY_BUCKETS_MS,
            registry=registry,
        )
        registry.register(self)

    def observe(self, isvc: str, revision: str, status: int, seconds: float) -> None:
        configuration = f"{isvc}-predictor"
        labels = (isvc, revision, configuration, revision, str(status), f"{status // 100}xx")
        self._counts[labels] += 1
        self._latency.labels(*labels).observe(seconds * 1000)

    def collect(self) -> Iterator[Metric]:
        family = UnknownMetricFamily(
            "revision_app_request_count",
            "The number of requests that are routed to user-container",
            labels=QUEUE_PROXY_LABELS,
        )
        for labels, count in list(self._counts.items()):
            family.add_metric(list(labels), count)
        yield family


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
        self.backends = tuple(b for b in backends if b.percent > 0)
        self.timeout = timeout

    async def handle(self, request: web.Request) -> web.StreamResponse:
        backend = choose(self.backends, self.rng.random() * 100)
        if backend is None:
            return _error(503, f"InferenceService {self.isvc} has no ready revision")
        started = time.perf_counter()
        response: web.StreamResponse | None = None
        try:
            async with asyncio.timeout(self.timeout):
                headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
                url = backend.base_url + request.rel_url.raw_path_qs
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
