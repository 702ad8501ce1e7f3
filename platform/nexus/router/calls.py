"""Step calls: one POST per service step over the shared upstream client (``nexus.edge.client``).

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
  reason in Go's words; the address a call really went to (``--host-map``) is only
  logged (issue 12: it leaked into error bodies).
- Transport failures (timeout, connect, reset, EOF) are marked ``upstream`` so that a
  Sequence under the ``client`` status policy can treat them as upstream failures.
- A step's non-2xx answer keeps its ``Retry-After`` and ``x-ratelimit-*`` headers
  (``headers.passed_back``), which KServe drops, so a client can honour a 429.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from nexus.edge.client import HttpClient, Origin, Response
from nexus.edge.failures import ConnectFailed, ConnectionBroken, TransportError
from nexus.router.graph import Graph
from nexus.router.headers import passed_back
from nexus.router.metrics import RouterMetrics, now
from nexus.router.reply import DEFAULT_MAX_RESPONSE_BYTES, GraphError, Reply, read_step_body

log = logging.getLogger("nexus.router")

EVENT_STREAM = b"text/event-stream"
Target = tuple[Origin, str, "str | None"]


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


def step_target(url: str, host_map: Mapping[str, str]) -> Target:
    """Where to connect for ``url``, its request target, and the ``Host`` header to send
    (``None``: the URL's own)."""
    origin, path = Origin.of(url)
    target = host_map.get(origin.host.lower())
    if target is None:
        return origin, path, None
    host, _, port = target.rpartition(":")
    return Origin("http", host, int(port), target), path, urlsplit(url).netloc


class StepCaller:
    """Calls service steps; owns the upstream client between ``start()`` and ``close()``."""

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
        self._host_map = host_map
        self._targets = {
            step.service_url: step_target(step.service_url, host_map)
            for node in graph.nodes.values()
            for step in node.steps
            if step.service_url
        }
        # The headers a call carries when nothing is propagated (the common case), built
        # once per step URL instead of per request.
        self._plain_headers = {url: _step_headers([]) for url in self._targets}
        self._client: HttpClient | None = None

    async def start(self) -> None:
        # No timeouts in the client: Go's ``Client.Timeout`` (serviceClient) is the whole
        # call's deadline, applied around it in ``call``.
        self._client = HttpClient()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def call(
        self, url: str, label: str, body: bytes, headers: list[tuple[str, str]]
    ) -> Reply:
        client = self._client
        if client is None:
            raise RuntimeError("StepCaller.start() was not awaited")
        target = self._targets.get(url)
        if target is None:
            target = step_target(url, self._host_map)
        out = self._plain_headers.get(url) if not headers else None
        if out is None:
            out = _step_headers(headers)
        started = now()
        try:
            if self.timeout is None:
                # No serviceClient timeout (the default): no timeout context to enter.
                reply = await self._exchange(client, target, body, out, label)
            else:
                async with asyncio.timeout(self.timeout):
                    reply = await self._exchange(client, target, body, out, label)
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
        except (TransportError, ValueError) as exc:
            self.metrics.observe_step(label, "error", now() - started)
            log.warning("step %s: call to %s failed: %r", label, target[0], exc)
            cause = f'Post "{url}": {_go_error(exc, url)}'
            raise GraphError(cause, step=label, upstream=True) from exc
        self.metrics.observe_step(label, reply.status, now() - started)
        return reply

    async def _exchange(
        self,
        client: HttpClient,
        target: Target,
        body: bytes,
        headers: list[tuple[str, str]],
        label: str,
    ) -> Reply:
        """POST and read the answer; a 2xx event stream is left open (``Reply.stream``)."""
        origin, path, host = target
        response: Response = await client.request(
            "POST", origin, path, headers=headers, body=body, host=host
        )
        content_type = response.content_type
        if 200 <= response.status <= 299 and content_type.startswith(EVENT_STREAM):
            return Reply(
                response.status, b"", label, response, content_type.decode("latin-1"),
                max_bytes=self.max_response_bytes,
            )  # fmt: skip
        payload = await read_step_body(response, self.max_response_bytes, step=label)
        if response.status < 300:
            return Reply(response.status, payload, label)
        # A refusal's Retry-After and limit headers reach the client (issue 11).
        return Reply(response.status, payload, label, headers=passed_back(response.headers))


def _step_headers(propagated: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Propagated headers, plus KServe's default Content-Type."""
    out = list(propagated)
    if not any(name == "Content-Type" for name, _ in out):
        out.append(("Content-Type", "application/json"))
    return out


def _go_error(exc: TransportError | ValueError, url: str) -> str:
    """Word a failed call the way Go's net/http does, for the spec's own URL.

    Go dials the URL's host, so a dial error names that host; the local ``--host-map``
    target stays out of the answer, and so does any OS text.
    """
    if isinstance(exc, ConnectFailed):
        parts = urlsplit(url)
        host = parts.hostname or ""
        if exc.reason == "no such host":
            return f"dial tcp: lookup {host}: no such host"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return f"dial tcp {host}:{port}: connect: {exc.reason}"
    if isinstance(exc, ConnectionBroken) and exc.reason != "EOF":
        return f"read: {exc.reason}"
    if isinstance(exc, TransportError):
        return exc.reason
    return "transport error"
