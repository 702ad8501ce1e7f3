"""Step calls: one POST per service step over one shared keep-alive aiohttp session.

KServe's ``callService`` POSTs the step input to ``serviceUrl`` with the propagated
headers, adds ``Content-Type: application/json`` when none was propagated, and reads the
whole body; any transport failure (refused, DNS, timeout) becomes the router's own 500
whose cause reads like Go's ``Post "<url>": ...`` error. ``routerTimeouts.serviceClient``
bounds each call (Go's ``http.Client.Timeout``); unset means no limit.

Nexus extensions:

- A 2xx ``text/event-stream`` answer is not read here: the reply carries the open stream
  so the server can relay it. The service-client timeout then covers the wait for the
  response headers only, since a token stream legitimately outlives it.
- ``--host-map name=ip:port`` (local platform) sends calls for a cluster host name to a
  local process while the manifest keeps the cluster URL; the ``Host`` header keeps the
  cluster name. Rewrites are computed once at start-up.
- A step answer is read up to ``--max-response-bytes`` (default 16 MiB); a longer one
  is a 502 naming the step. Error causes name the URL of the graph spec and a fixed
  reason in Go's words; the address a call really went to (``--host-map``) and aiohttp's
  own error text are only logged (issue 12: they leaked into error bodies).
- Transport failures (timeout, connect, reset, EOF) are marked ``upstream`` so that a
  Sequence under the ``client`` status policy can treat them as upstream failures.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from nexus.router.graph import Graph
from nexus.router.metrics import RouterMetrics, now
from nexus.router.reply import DEFAULT_MAX_RESPONSE_BYTES, GraphError, Reply, read_limited

log = logging.getLogger("nexus.router")

EVENT_STREAM = "text/event-stream"


def parse_host_map(entries: list[str]) -> dict[str, str]:
    """``name=ip:port`` pairs from ``--host-map`` into a dict."""
    mapping: dict[str, str] = {}
    for entry in entries:
        name, sep, target = entry.partition("=")
        host, colon, port = target.rpartition(":")
        if not sep or not name or not colon or not host or not port.isdigit():
            raise ValueError(f"--host-map wants name=host:port, got {entry!r}")
        mapping[name.strip().lower()] = target.strip()
    return mapping


def _target(url: str, host_map: Mapping[str, str]) -> tuple[str, str | None]:
    """The URL to connect to and the ``Host`` header to send (``None``: the URL's own)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    target = host_map.get(host)
    if target is None:
        return url, None
    return urlunsplit(("http", target, parts.path, parts.query, "")), parts.netloc


class StepCaller:
    """Calls service steps; owns the aiohttp session between ``start()`` and ``close()``."""

    def __init__(
        self,
        *,
        graph: Graph,
        metrics: RouterMetrics,
        host_map: Mapping[str, str],
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.metrics = metrics
        self.max_response_bytes = max_response_bytes
        seconds = graph.timeouts.service_client
        self.timeout: float | None = float(seconds) if seconds else None
        self._targets = {
            step.service_url: _target(step.service_url, host_map)
            for node in graph.nodes.values()
            for step in node.steps
            if step.service_url
        }
        # The headers a call carries when nothing is propagated (the common case), built
        # once per step URL instead of per request.
        self._plain_headers = {
            url: _step_headers([], host) for url, (_, host) in self._targets.items()
        }
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=90, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            skip_auto_headers=("Content-Type",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self, url: str, label: str, body: bytes, headers: list[tuple[str, str]]
    ) -> Reply:
        session = self._session
        if session is None:
            raise RuntimeError("StepCaller.start() was not awaited")
        target, host = self._targets.get(url) or (url, None)
        out = self._plain_headers.get(url) if not headers else None
        if out is None:
            out = _step_headers(headers, host)
        started = now()
        try:
            if self.timeout is None:
                # No serviceClient timeout (the default): no timeout context to enter.
                response, payload = await self._exchange(session, target, body, out, label)
            else:
                async with asyncio.timeout(self.timeout):
                    response, payload = await self._exchange(session, target, body, out, label)
            if payload is None:
                self.metrics.observe_step(label, response.status, now() - started)
                content_type = response.headers.get("Content-Type", "")
                return Reply(
                    response.status, b"", label, response, content_type,
                    max_bytes=self.max_response_bytes,
                )  # fmt: skip
        except GraphError:
            self.metrics.observe_step(label, "error", now() - started)
            raise
        except TimeoutError:
            self.metrics.observe_step(label, "error", now() - started)
            raise GraphError(
                f'Post "{url}": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)",
                step=label,
                upstream=True,
            ) from None
        except aiohttp.ClientConnectorError as exc:
            self.metrics.observe_step(label, "error", now() - started)
            log.warning("step %s: connecting to %s failed: %s", label, target, exc)
            cause = f'Post "{url}": {_dial_error(exc, url)}'
            raise GraphError(cause, step=label, upstream=True) from exc
        except (aiohttp.ClientError, ValueError) as exc:
            self.metrics.observe_step(label, "error", now() - started)
            log.warning("step %s: call to %s failed: %r", label, target, exc)
            cause = f'Post "{url}": {_transport_reason(exc)}'
            raise GraphError(cause, step=label, upstream=True) from exc
        self.metrics.observe_step(label, response.status, now() - started)
        return Reply(response.status, payload, label)

    async def _exchange(
        self,
        session: aiohttp.ClientSession,
        target: str,
        body: bytes,
        headers: list[tuple[str, str]],
        label: str,
    ) -> tuple[aiohttp.ClientResponse, bytes | None]:
        """POST and read the answer; a 2xx event stream is left open (payload ``None``)."""
        response = await session.post(target, data=body, headers=headers)
        content_type = response.headers.get("Content-Type", "")
        if 200 <= response.status <= 299 and content_type.startswith(EVENT_STREAM):
            return response, None
        try:
            return response, await read_limited(response, self.max_response_bytes, step=label)
        finally:
            response.release()


def _step_headers(propagated: list[tuple[str, str]], host: str | None) -> list[tuple[str, str]]:
    """Propagated headers, plus KServe's default Content-Type and a mapped ``Host``."""
    out = list(propagated)
    if not any(name == "Content-Type" for name, _ in out):
        out.append(("Content-Type", "application/json"))
    if host is not None:
        out.append(("Host", host))
    return out


def _dial_error(exc: aiohttp.ClientConnectorError, url: str) -> str:
    """Word a connect failure the way Go's net package does, for the spec's own URL.

    Go dials the URL's host, so its message names that host; the local ``--host-map``
    target stays out of the answer.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"dial tcp: lookup {host}: no such host"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    code = exc.os_error.errno
    reason = os.strerror(code).lower() if code else "connection failed"
    if code == errno.ECONNREFUSED:
        reason = "connection refused"
    return f"dial tcp {host}:{port}: connect: {reason}"


def _transport_reason(exc: BaseException) -> str:
    """A fixed, Go-like reason for a failure after connecting (never aiohttp's own text)."""
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return "EOF"
    if isinstance(exc, aiohttp.ClientOSError):
        return "read: connection reset by peer"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "malformed HTTP response"
    return "transport error"
