"""An InferenceService's front door: what Knative's route does for ``<isvc>.<ns>.svc``.

A path-preserving async reverse proxy that draws a revision by weight for every request
and relays the answer as it arrives (SSE streams included). The response carries
``x-nexus-revision`` so clients and tests can tell which revision answered. Routes are
replaced atomically by the controller when traffic moves; requests in flight finish on
the revision they started on, as with Knative.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

REVISION_HEADER = "x-nexus-revision"
# Hop-by-hop headers (RFC 9110 §7.6.1) are never forwarded; Host is set by the client.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
     "trailer", "transfer-encoding", "upgrade", "host", "content-length"}
)  # fmt: skip


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


class Front:
    """One InferenceService's weighted proxy; ``session`` is shared across fronts."""

    def __init__(
        self,
        *,
        isvc: str,
        session: aiohttp.ClientSession,
        requests: Counter,
        rng: random.Random | None = None,
    ) -> None:
        self.isvc = isvc
        self.session = session
        self.requests = requests
        self.rng = rng or random.Random()  # noqa: S311 - traffic split, not security
        self.backends: tuple[Backend, ...] = ()

    def set_backends(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(b for b in backends if b.percent > 0)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        backend = choose(self.backends, self.rng.random() * 100)
        if backend is None:
            self.requests.labels(isvc=self.isvc, revision="", code="503").inc()
            return _error(503, f"InferenceService {self.isvc} has no ready revision")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = backend.base_url + request.rel_url.raw_path_qs
        body = await request.read()
        try:
            upstream = await self.session.request(
                request.method, url, headers=headers, data=body, allow_redirects=False
            )
        except aiohttp.ClientError as exc:
            self.requests.labels(isvc=self.isvc, revision=backend.revision, code="503").inc()
            return _error(503, f"revision {backend.revision} is unreachable: {exc}")
        async with upstream:
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            out[REVISION_HEADER] = backend.revision
            response = web.StreamResponse(status=upstream.status, headers=out)
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
        self.requests.labels(
            isvc=self.isvc, revision=backend.revision, code=str(upstream.status)
        ).inc()
        return response


def front_metrics(registry: CollectorRegistry) -> Counter:
    return Counter(
        "nexus_front_requests",
        "Requests through an InferenceService front, by revision and status code",
        ["isvc", "revision", "code"],
        registry=registry,
    )


def front_app(front: Front) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", front.handle)
    return app
