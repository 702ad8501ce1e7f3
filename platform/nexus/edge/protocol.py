"""uvicorn's httptools protocol with the limits it lacks: header size and count, request-line
length, and read timeouts for headers and body. Both servers run on it.

What uvicorn does without this (read in uvicorn 0.54.0, the pinned version,
``uvicorn/protocols/http/httptools_impl.py``):
no limit on the header block or the number of headers (httptools accumulates a header
value in memory until it ends: a 200 MB header took the transformer's RSS from 214 to
467 MB, issue 12), no limit on the URL, and no timer at all between a connection's first
byte and its complete request: the keep-alive timer only runs after a response, so a
client that never finishes its headers or body holds the connection forever.

Limits (``EdgeLimits``; environment overrides in ``EdgeLimits.from_env``):

- request line (the URL as httptools streams it) over ``max_request_line`` bytes: **414**
  URI Too Long, the status RFC 9110 §15.5.15 gives a target longer than the server reads;
- header block over ``max_header_bytes`` or more than ``max_headers`` fields: **431**
  (RFC 6585 §5). Field bytes are counted as the parser reports them, and a block still
  incomplete after twice the limit is refused as it streams in, so at most about
  ``2 * max_header_bytes`` plus one socket read (uvloop reads up to 256,000 bytes,
  ``UV_STREAM_RECV_BUF_SIZE`` in uvloop/includes/consts.pxi) is ever buffered;
- headers not complete ``header_timeout`` seconds after the request's first byte (or
  after the connection opened, when nothing came): **408** and the connection closes;
- body not complete ``body_timeout`` seconds after the headers: 408 if the application
  has not answered yet, else the connection closes; the application sees a disconnect.

Refusals are plain text with ``Connection: close``, written before the application runs,
so neither server's error shape applies. Timers are armed only while a head or body is
incomplete after a socket read; a request that arrives in one read arms none. The
keep-alive timeout between requests stays uvicorn's ``timeout_keep_alive``, set by each
server (the router: Go's 180 s ``IdleTimeout`` or ``routerTimeouts.serverIdle``; the
transformer: KServe's ``--timeout_keep_alive``, 5 s).

The subclass overrides parser callbacks and ``data_received`` of uvicorn's class and uses
its helpers (``_unset_keepalive_if_required``, ``_should_upgrade``); ``tests/edge`` runs
every limit against both real servers, so an upgrade of uvicorn that moves them fails there.
"""

from __future__ import annotations

import asyncio
import http
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nexus.errors import ConfigError

ENV_PREFIX = "NEXUS_EDGE_"


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What one request may make a server buffer or wait for, before the app runs."""

    max_request_line: int = 8 * 1024  # nginx's large_client_header_buffers line size
    max_header_bytes: int = 64 * 1024  # a JWT plus propagated headers fits many times over
    max_headers: int = 100  # Apache httpd's LimitRequestFields default
    header_timeout: float = 10.0
    body_timeout: float = 60.0  # Go's 60 s serverRead default in KServe's router

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EdgeLimits:
        """``NEXUS_EDGE_MAX_HEADER_BYTES`` and friends: one variable per field, upper case."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = ENV_PREFIX + spec.name.upper()
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind = float if spec.type == "float" else int
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a number, got {raw!r}") from None
            if value <= 0:
                raise ConfigError(f"{name} must be greater than 0, got {raw!r}")
            values[spec.name] = value
        return cls(**values)


class EdgeConfig(uvicorn.Config):
    """``uvicorn.Config`` that serves with :class:`EdgeProtocol` and carries its limits.

    A class, not a closure, so that uvicorn's worker processes can unpickle it.
    """

    def __init__(self, app: Any, *, limits: EdgeLimits, **kwargs: Any) -> None:
        kwargs["http"] = EdgeProtocol
        super().__init__(app, **kwargs)
        self.edge_limits = limits


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing; httptools wraps it."""


class EdgeProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that enforces :class:`EdgeLimits` (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = getattr(config, "edge_limits", None)
        self.limits: EdgeLimits = limits if isinstance(limits, EdgeLimits) else EdgeLimits()
        self._in_head = True  # between messages or inside a head; False inside a body
        self._head_begun = False  # a request's first byte came, its head is incomplete
        self._head_seen = 0  # bytes read while the current head is incomplete
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self.limits.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_seen += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        limits = self.limits
        if not self._in_head:
            self._arm("body", limits.body_timeout)
        elif not self._head_begun:
            self._disarm()  # between requests: uvicorn's keep-alive timer takes over
        elif self._head_seen > 2 * limits.max_header_bytes + limits.max_request_line:
            self._refuse(431, "request header block too large")
        else:
            self._arm("head", limits.header_timeout)

    # -- parser callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True
        self._header_bytes = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_request_line:
            self._refusal = (414, "request line too long")
            raise _Refused
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._refusal = (431, "too many request header fields")
            raise _Refused
        if self._header_bytes > self.limits.max_header_bytes:
            self._refusal = (431, "request header block too large")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_begun = False
        self._head_seen = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_seen = 0
        if self._timer_kind == "body":
            self._disarm()
        super().on_message_complete()

    # -- timers and refusals -----------------------------------------------------------

    def _arm(self, kind: str, seconds: float) -> None:
        """Start a read deadline unless one of the same kind runs (trickling never extends it)."""
        if self._timer is not None and self._timer_kind == kind:
            return
        self._disarm()
        self._timer_kind = kind
        self._timer = self.loop.call_later(seconds, self._expired, kind)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_kind = ""

    def _expired(self, kind: str) -> None:
        self._timer = None
        self._timer_kind = ""
        cycle = self.cycle
        if kind == "head" and cycle is not None and not cycle.response_complete:
            # A pipelined head waits behind a response in progress: not the client's fault.
            self._arm("head", self.limits.header_timeout)
            return
        what = "request headers" if kind == "head" else "request body"
        self.logger.info("closing a connection: %s not received in time", what)
        self._refuse(408, f"{what} not received in time", in_body=kind == "body")

    def _refuse(self, status: int, message: str, *, in_body: bool = False) -> None:
        """Answer ``status`` in plain text when nothing else is being answered, then close.

        For a head, ``self.cycle`` is the previous request's (its answer may still be in
        flight on a pipelined connection); for a body, it is the request's own.
        """
        self._disarm()
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if in_body:
            answer = cycle is not None and not cycle.response_started
        else:
            answer = cycle is None or cycle.response_complete
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the application sees a disconnect, writes nothing
            cycle.message_event.set()
        if answer:
            body = message.encode("ascii") + b"\n"
            phrase = http.HTTPStatus(status).phrase.encode("ascii")
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, phrase, len(body), body)
            )
        self.transport.close()


def serve(app: Any, *, limits: EdgeLimits, **kwargs: Any) -> None:
    """``uvicorn.run`` on :class:`EdgeProtocol`: one process, or ``workers`` sharing a socket.

    Mirrors ``uvicorn.main.run`` for the two modes the servers use (no reload, no UDS).
    """
    from uvicorn.supervisors import Multiprocess

    config = EdgeConfig(app, limits=limits, **kwargs)
    server = uvicorn.Server(config)
    if config.workers > 1:
        if not isinstance(app, str):
            raise ConfigError("several workers need the application as an import string")
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    server.run()
    if not server.started:
        raise SystemExit(3)  # uvicorn's STARTUP_FAILURE
