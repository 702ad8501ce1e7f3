"""Calls to the predictor: the shared upstream client, the circuit breaker, error translation.

Every transport failure becomes an ``UpstreamFailure`` (whose body carries the fallback
marker) in one place, ``nexus.edge.failures.upstream_failure``, and the
breaker hears about each call's outcome: refused, timed out or 5xx count as failures,
any other answer (4xx included) as a success.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

from nexus.breaker import CircuitBreaker, Permit
from nexus.edge.client import HttpClient, Origin, Response
from nexus.edge.failures import TransportError, upstream_failure
from nexus.errors import (
    NexusError,
    UpstreamFailure,
    UpstreamServerError,
    UpstreamTimeout,
)
from nexus.observability import TransformerMetrics

ERROR_SNIPPET_BYTES = 512
# What a client reads when the predictor fails. The detailed message (predictor host:port,
# the transport's reason, the predictor's 5xx body) stays in the access log only (issue 12,
# item 11): it names internal addresses and software the caller has no use for.
PUBLIC_MESSAGES = {
    "upstream_unavailable": "the model server is unreachable",
    "upstream_timeout": "the model server did not answer in time",
    "upstream_server_error": "the model server failed to answer",
    "circuit_open": "the model server is failing; calls are paused, retry later",
}


def public_body(exc: NexusError) -> bytes:
    """The client-facing body of ``exc``: upstream failures lose their internal details."""
    if not isinstance(exc, UpstreamFailure):
        return exc.body_bytes()
    body = exc.body()
    body["error"]["message"] = PUBLIC_MESSAGES.get(exc.code, "the model server failed")
    return orjson.dumps(body)


def new_client(*, timeout_seconds: float) -> HttpClient:
    """The predictor client of one server process: keep-alive pool, connect and read timeouts.

    The read timeout bounds the wait for the answer's head, then each silence inside a
    body, so long token streams still flow (``nexus.edge.client``).
    """
    return HttpClient(connect_timeout=timeout_seconds, read_timeout=timeout_seconds)


@dataclass(slots=True)
class PredictorReply:
    """A predictor answer whose headers have arrived; the body is read or streamed by the caller."""

    status: int
    content_type: bytes
    response: Response
    permit: Permit
    started: float

    @property
    def streaming(self) -> bool:
        return self.content_type.startswith(b"text/event-stream")


class Upstream:
    """The predictor behind this transformer."""

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        client: HttpClient,
        breaker: CircuitBreaker,
        metrics: TransformerMetrics,
    ) -> None:
        self.name = name
        self._origin, prefix = Origin.of(base_url)
        self._prefix = prefix.rstrip("/")
        self._client = client
        self._breaker = breaker
        self._metrics = metrics
        # Bound once: one upstream per transformer, a handful of statuses.
        self._latency = metrics.upstream_latency.labels(name)
        self._by_status: dict[str, Any] = {}

    async def open(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> PredictorReply:
        """Send a request and wait for the answer's headers; raises ``UpstreamFailure``."""
        permit = self._breaker.acquire()
        started = time.perf_counter()
        try:
            response = await self._client.request(
                method, self._origin, self._prefix + path, headers=headers.items(), body=body
            )
        except asyncio.CancelledError:
            self._breaker.release(permit)
            raise
        except (TransportError, ValueError) as exc:
            raise self._failed(permit, self.failure(exc, "call")) from exc
        self._latency.observe(time.perf_counter() - started)
        content_type = response.header(b"content-type") or b"application/json"
        return PredictorReply(response.status, content_type, response, permit, started)

    async def read(self, reply: PredictorReply) -> bytes:
        """The whole body of a non-streaming answer; a 5xx becomes ``UpstreamServerError``."""
        try:
            body = await reply.response.read()
        except asyncio.CancelledError:
            self._breaker.release(reply.permit)
            raise
        except TransportError as exc:
            raise self._failed(reply.permit, self.failure(exc, "answer")) from exc
        self.settle(reply, ok=reply.status < 500)
        if reply.status >= 500:
            snippet = body[:ERROR_SNIPPET_BYTES].decode(errors="replace")
            raise UpstreamServerError(
                f"predictor {self.name} answered {reply.status}: {snippet}", upstream=self.name
            )
        return body

    def chunks(self, reply: PredictorReply) -> AsyncIterator[bytes]:
        """The body of a streaming answer as it arrives; the caller settles the breaker.

        A break raises ``TransportError``, the shared relay's contract (``edge/sse.py``);
        leaving the stream early closes the connection (``edge/client.py``).
        """
        return reply.response.chunks()

    def settle(self, reply: PredictorReply, *, ok: bool) -> None:
        self._count(str(reply.status))
        if ok:
            self._breaker.success(reply.permit)
        else:
            self._breaker.failure(reply.permit)

    def abandon(self, reply: PredictorReply) -> None:
        """The client left mid-answer: no verdict on the upstream."""
        self._breaker.release(reply.permit)
        reply.response.close()

    def failure(self, exc: TransportError | ValueError, stage: str) -> UpstreamFailure:
        """A transport fault at ``stage`` (call, answer, stream) as the client's error."""
        return upstream_failure(exc, upstream=self.name, what=f"predictor {self.name} {stage}")

    def _failed(self, permit: Permit, failure: UpstreamFailure) -> UpstreamFailure:
        self._breaker.failure(permit)
        self._count("timeout" if isinstance(failure, UpstreamTimeout) else "unreachable")
        return failure

    def _count(self, status: str) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._metrics.upstream_requests.labels(
                self.name, status
            )
        counter.inc()
