"""What a node or step answers with, and the errors KServe's router turns into its error body.

A :class:`Reply` is either buffered (``body`` holds everything, as in KServe) or, as a Nexus
extension, an open ``text/event-stream`` response whose chunks the server relays as they
arrive. Everything that needs the bytes of a streaming reply (a ``$response`` chain, an
Ensemble, a condition) calls :meth:`Reply.buffered` first, which is exactly KServe's
behaviour of reading a step's body whole.

Router-made failures are :class:`GraphError`; the server renders them as KServe does:
``{"error": "Failed to process request", "cause": "<message>"}`` with the error's status.

The status policy (:data:`StatusPolicy`) decides what a Sequence answers when it stops early:
``kserve`` keeps KServe's status 200, ``client`` keeps the answering step's status, and
turns a step that could not answer in JSON into the transformer's upstream-failure body
(:func:`upstream_failure_reply`) so the next step's fallback condition can match it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import orjson
import pygjson

from nexus.edge.client import Response
from nexus.edge.failures import ResponseTooLarge, TransportError
from nexus.edge.nesting import DEFAULT_MAX_NESTING, deeper_than
from nexus.errors import NexusError, UpstreamServerError, UpstreamUnavailable
from nexus.router.graph import Node, Step

FAILURE_MESSAGE = "Failed to process request"
StepHeaders = list[tuple[str, str]]
# What a step may answer, read whole (KServe reads without a limit; 500 MB took the RSS
# of an unbounded router past 1 GB, issue 12). Overridden by --max-response-bytes.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
StatusPolicy = Literal["client", "kserve"]
STATUS_POLICIES: tuple[StatusPolicy, ...] = ("client", "kserve")


class GraphError(Exception):
    """A failure the router answers itself (KServe's ``err != nil`` path)."""

    def __init__(
        self, cause: str, *, status: int = 500, step: str = "", upstream: bool = False
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.status = status
        self.step = step
        # True when a step could not be reached or broke off (refused, reset, timeout):
        # under the ``client`` policy that is an upstream failure, not the router's own.
        self.upstream = upstream

    def body(self) -> bytes:
        return go_json({"error": FAILURE_MESSAGE, "cause": self.cause})


@dataclass(slots=True)
class Reply:
    """A step's or node's answer: status, body, and the step that produced it."""

    status: int
    body: bytes
    step: str
    stream: Response | None = None
    content_type: str = ""
    _valid: bool | None = None
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # bounds buffered() of a stream
    # Step answer headers the client may act on (``headers.passed_back``: Retry-After,
    # x-ratelimit-*), sent with the reply when it is the graph's answer.
    headers: tuple[tuple[bytes, bytes], ...] = ()
    # What relays the stream instead of its raw chunks (``continuation.py``).
    source: StreamSource | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status <= 299

    @property
    def is_valid_json(self) -> bool:
        """``gjson.ValidBytes``/``json.Valid`` of the body, computed once per reply.

        Raises a 502 :class:`GraphError` for a body nested deeper than the router's limit:
        GJSON's recursive validator would overflow the stack on it (see ``nexus.edge.nesting``).
        """
        if self._valid is None:
            self._valid = self.stream is None and json_valid(self.body, step=self.step)
        return self._valid

    async def buffered(self) -> Reply:
        """Read a streaming reply whole (what KServe always does); a no-op when buffered."""
        stream = self.stream
        if stream is None:
            return self
        try:
            body = await read_step_body(stream, self.max_bytes, step=self.step)
        except TransportError as exc:
            raise GraphError(
                f"step {self.step} broke off its answer ({exc.reason})", step=self.step
            ) from exc
        return Reply(status=self.status, body=body, step=self.step)

    def chunks(self) -> AsyncIterator[bytes]:
        """A streaming reply's body as it arrives, for the shared relay (``edge/sse.py``):
        it raises ``TransportError`` on a break and closes the connection when left early."""
        if self.source is not None:
            return self.source.chunks()
        stream = self.stream
        assert stream is not None
        return stream.chunks()

    def close(self) -> None:
        """Drop an unread stream (a later error made it unnecessary)."""
        if self.stream is not None:
            self.stream.close()


async def read_step_body(response: Response, limit: int, *, step: str) -> bytes:
    """A step's whole answer, refused (502) once it exceeds ``limit`` bytes.

    Raises ``TransportError`` when the step breaks off; the connection is closed either way.
    """
    try:
        return await response.read(limit)
    except ResponseTooLarge:
        raise GraphError(_too_large(step, limit), status=502, step=step) from None


def _too_large(step: str, limit: int) -> str:
    return f"step {step} answered more than the router's {limit}-byte limit"


def json_valid(body: bytes, *, step: str, max_nesting: int = DEFAULT_MAX_NESTING) -> bool:
    """``gjson.Valid`` for a step answer whose nesting was checked first (502 if too deep)."""
    if deeper_than(body, max_nesting):
        raise GraphError(
            f"step {step} answered JSON nested deeper than {max_nesting} levels",
            status=502,
            step=step,
        )
    return bool(pygjson.validate(body))


def request_json_valid(body: bytes, *, max_nesting: int = DEFAULT_MAX_NESTING) -> bool:
    """``gjson.Valid`` for a request body whose nesting was checked first (400 if too deep)."""
    if deeper_than(body, max_nesting):
        raise GraphError(request_too_deep(max_nesting), status=400)
    return bool(pygjson.validate(body))


def request_too_deep(max_nesting: int) -> str:
    return f"request body is JSON nested deeper than {max_nesting} levels"


def go_json(value: object) -> bytes:
    """Serialize like Go's ``json.Marshal`` of a map: sorted keys, HTML-safe escapes.

    Only keys order and the ``<``, ``>``, ``&`` escapes are reproduced (cheap, and visible
    to anyone comparing bytes); Go prints ``1.0`` as ``1``, orjson keeps ``1.0``.
    """
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    if b"<" in raw or b">" in raw or b"&" in raw:
        raw = raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    return raw


def sniff_content_type(body: bytes) -> bytes | None:
    """A small part of Go's ``http.DetectContentType``, used when the body is not JSON.

    KServe sets ``application/json`` only on valid JSON and lets Go sniff the rest; text
    and HTML are what graph steps realistically return, anything else is octet-stream.
    """
    if not body:
        return None
    head = body[:512].lstrip(b"\t\n\x0c\r ")
    lowered = head[:14].lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<p", b"<h1")):
        return b"text/html; charset=utf-8"
    if any(byte < 0x20 and byte not in (0x09, 0x0A, 0x0C, 0x0D, 0x1B) for byte in body[:512]):
        return b"application/octet-stream"
    return b"text/plain; charset=utf-8"


def upstream_failure_reply(step: str, status: int, cause: str) -> Reply:
    """The transformer's upstream-failure answer (``nexus.errors``), made by the router.

    Used under the ``client`` policy for a step that failed without saying so in the
    transformer's JSON: a transport failure (``status`` 0, answered as 502) or a plain
    5xx such as Knative's activator or the local front produce when the transformer is gone.
    """
    if status:
        error: UpstreamUnavailable | UpstreamServerError = UpstreamServerError(
            f"step {step} answered {status} without a JSON error", status=status
        )
    else:
        error = UpstreamUnavailable(f"step {step} could not answer: {cause}")
    return Reply(error.status, error.body_bytes(), step, _valid=True)


def _nexus_error_types() -> frozenset[str]:
    """Every ``error.type`` a Nexus error body can carry (the classes of ``nexus.errors``)."""
    found: set[str] = set()
    pending: list[type[NexusError]] = [NexusError]
    while pending:
        cls = pending.pop()
        found.add(cls.error_type)
        pending.extend(cls.__subclasses__())
    return frozenset(found)


# Immutable, computed once: what tells the transformer's JSON error from another's.
NEXUS_ERROR_TYPES = _nexus_error_types()


def is_transformer_error(reply: Reply) -> bool:
    """Whether a buffered answer is a Nexus transformer's JSON error body.

    That body's ``error.type`` is one of ``nexus.errors``' types (``NexusError.body``); the
    transformer decides itself whether it is an upstream failure, so it is kept. The local
    front's 503 (``nexus/local/front.py``: ``"type": "service_unavailable"``), Knative's
    activator and queue-proxy (plain text) and KServe's model servers
    (``{"error": "<text>"}``) are not.
    """
    if not reply.is_valid_json:
        return False
    kind = pygjson.get_bytes(reply.body, "error.type")
    return kind.exists() and kind.to_str() in NEXUS_ERROR_TYPES


class StreamSource(Protocol):
    """Relays a streaming reply in place of its raw chunks (``continuation.Continuation``)."""

    def chunks(self) -> AsyncIterator[bytes]: ...


class StepRunner(Protocol):
    """What a node strategy needs from the graph executor (kept abstract to avoid a cycle)."""

    status_policy: StatusPolicy
    continue_streams: bool  # continuation.py: on unless --continuation off

    async def run_step(self, step: Step, body: bytes, headers: StepHeaders) -> Reply: ...

    def draw_percent(self) -> int:
        """A uniform draw in [0, 100) for the Splitter."""
        ...

    def fallback_used(self, node: Node, failed: str, taken: Step) -> None:
        """``failed`` names the step that produced the failure body (a leaf when nested)."""
        ...

    def stream_continued(self, failed: str, taken: str) -> None:
        """``taken`` continues the stream ``failed`` broke off (``continuation.py``)."""
        ...


def condition_holds(step: Step, body: bytes) -> bool:
    """``gjson.GetBytes(body, condition).Exists()``; an empty condition never holds."""
    path = step.compiled_condition
    return path is not None and bool(pygjson.get_bytes(body, path).exists())
