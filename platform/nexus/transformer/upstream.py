"""Calls to the predictor: one pooled aiohttp session, the circuit breaker, error translation.

Every transport failure becomes an ``UpstreamFailure`` (whose body carries the fallback
marker), and the breaker hears about each call's outcome: refused, timed out or 5xx
count as failures, any other answer (4xx included) as a success.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from nexus.breaker import CircuitBreaker, Permit
from nexus.edge.failures import ConnectionBroken, TransportTimeout
from nexus.errors import (
    NexusError,
    UpstreamFailure,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from nexus.observability import GatewayMetrics

ERROR_SNIPPET_BYTES = 512
# What a client reads when the predictor fails. The detailed message (predictor host:port,
# aiohttp's error text, the predictor's 5xx body) stays in the access log only (issue 12,
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


def new_session(*, timeout_seconds: float) -> aiohttp.ClientSession:
    """The session for one server process: keep-alive pool, connect and read timeouts.

    ``sock_read`` bounds the wait for each read, so the first byte of an answer (and any
    silence inside a stream) is bounded by the timeout while long streams still flow.
    """
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=timeout_seconds, sock_read=timeout_seconds
    )
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    )


@dataclass(slots=True)
class Reply:
    """A predictor answer whose headers have arrived; the body is read or streamed by the caller."""

    status: int
    content_type: bytes
    response: aiohttp.ClientResponse
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
        session: aiohttp.ClientSession,
        breaker: CircuitBreaker,
        metrics: GatewayMetrics,
    ) -> None:
        self.name = name
        self._base_url = base_url
        self._session = session
        self._breaker = breaker
        self._metrics = metrics
        # Bound once: one upstream per transformer, a handful of statuses.
        self._latency = metrics.upstream_latency.labels(name)
        self._by_status: dict[str, Any] = {}

    async def open(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """Send a request and wait for the answer's headers; raises ``UpstreamFailure``."""
        permit = self._breaker.acquire()
        started = time.perf_counter()
        try:
            response = await self._session.request(
                method, self._base_url + path, data=body, headers=headers
            )
        except asyncio.CancelledError:
            self._breaker.release(permit)
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise self._failed(permit, UpstreamTimeout, "timeout", f"timed out: {exc}") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failed(permit, UpstreamUnavailable, "unreachable", str(exc)) from exc
        self._latency.observe(time.perf_counter() - started)
        content_type = response.headers.get("Content-Type", "application/json").encode()
        return Reply(response.status, content_type, response, permit, started)

    async def read(self, reply: Reply) -> bytes:
        """The whole body of a non-streaming answer; a 5xx becomes ``UpstreamServerError``."""
        try:
            body = await reply.response.read()
        except asyncio.CancelledError:
            self._breaker.release(reply.permit)
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise self._failed(reply.permit, UpstreamTimeout, "timeout", "timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failed(reply.permit, UpstreamUnavailable, "unreachable", str(exc)) from exc
        finally:
            reply.response.release()
        self.settle(reply, ok=reply.status < 500)
        if reply.status >= 500:
            snippet = body[:ERROR_SNIPPET_BYTES].decode(errors="replace")
            raise UpstreamServerError(
                f"predictor {self.name} answered {reply.status}: {snippet}", upstream=self.name
            )
        return body

    async def chunks(self, reply: Reply) -> AsyncIterator[bytes]:
        """The body of a streaming answer as it arrives; the caller settles the breaker.

        A break raises ``TransportError``, the shared relay's contract (``edge/sse.py``).
        """
        try:
            async for chunk in reply.response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise TransportTimeout("stream stalled") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectionBroken from exc
        finally:
            reply.response.release()

    def settle(self, reply: Reply, *, ok: bool) -> None:
        self._count(str(reply.status))
        if ok:
            self._breaker.success(reply.permit)
        else:
            self._breaker.failure(reply.permit)

    def abandon(self, reply: Reply) -> None:
        """The client left mid-answer: no verdict on the upstream."""
        self._breaker.release(reply.permit)
        reply.response.close()

    def _failed(
        self, permit: Permit, kind: type[UpstreamFailure], label: str, detail: str
    ) -> UpstreamFailure:
        self._breaker.failure(permit)
        self._count(label)
        return kind(f"predictor {self.name} {label}: {detail}", upstream=self.name)

    def _count(self, status: str) -> None:
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self._metrics.upstream_requests.labels(
                self.name, status
            )
        counter.inc()
