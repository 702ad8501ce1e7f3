"""What can go wrong below HTTP when a server of ours calls an upstream: one family for both.

The upstream client raises these, and only these, for transport faults (the way httpx maps
socket and parser errors in one place). ``upstream_failure`` turns one into the OpenAI-shaped
``UpstreamTimeout``/``UpstreamUnavailable`` (the transformer's calls and streams); the
router words its step errors as KServe's Go router does instead (``router/calls.py``,
``_go_error``).
``reason`` is a fixed, Go-like phrase ("connection refused", "EOF", "connection reset by
peer"): never the OS's text, which can carry addresses.

An async iterator of body chunks handed to the shared SSE relay raises ``TransportError``
when the upstream breaks after the first byte.
"""

from __future__ import annotations

from nexus.errors import UpstreamFailure, UpstreamTimeout, UpstreamUnavailable


class TransportError(Exception):
    """A call to an upstream failed below HTTP; nothing usable came back."""

    reason = "transport error"

    def __init__(self, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(self.reason)


class ConnectFailed(TransportError):
    """No connection: refused, unreachable, or the name did not resolve."""

    reason = "connection refused"


class ConnectionBroken(TransportError):
    """The connection closed or reset before the answer was whole."""

    reason = "EOF"


class TransportTimeout(TransportError):
    """The upstream did not answer, or stopped sending, within the deadline."""

    reason = "timeout"


class MalformedResponse(TransportError):
    """The bytes that came back are not HTTP/1.1."""

    reason = "malformed HTTP response"


class ResponseTooLarge(TransportError):
    """The body passed the caller's byte limit; the connection was closed unread."""

    reason = "response body too large"

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit


def upstream_failure(
    exc: TransportError | ValueError, *, upstream: str, what: str
) -> UpstreamFailure:
    """The one translation of a transport fault into an upstream failure: ``what`` names
    the call ("predictor chat call"); a ``ValueError`` is a request the client refused."""
    if isinstance(exc, TransportTimeout):
        return UpstreamTimeout(f"{what} timed out", upstream=upstream)
    reason = exc.reason if isinstance(exc, TransportError) else "request not sendable"
    return UpstreamUnavailable(f"{what}: {reason}", upstream=upstream)
