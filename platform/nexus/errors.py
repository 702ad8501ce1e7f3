"""The one exception tree of Nexus; every class knows its HTTP status and OpenAI error type.

    NexusError                         500 server_error
    ├── ClientError                    4xx: the caller can fix it; never triggers a fallback
    │   ├── InvalidRequest             400 invalid_request_error
    │   ├── AuthenticationFailed       401 authentication_error
    │   ├── PermissionDenied           403 permission_error
    │   ├── ModelNotFound              404 not_found_error
    │   ├── PayloadTooLarge            413 invalid_request_error
    │   ├── RateLimited                429 rate_limit_error (carries Retry-After)
    │   └── PredictorRejected          the predictor's own 4xx, status kept
    ├── UpstreamFailure                the predictor failed: the body carries the fallback marker
    │   ├── UpstreamUnavailable        502 (connection refused, reset, DNS)
    │   ├── UpstreamTimeout            504 (no first byte within the timeout)
    │   ├── UpstreamServerError        502 (the predictor answered 5xx)
    │   └── CircuitOpen                503 (breaker open; Retry-After)
    ├── LimiterUnavailable             503 (Redis unreachable and failure mode `closed`)
    └── OperationalError               commands and start-up, never the request path: the
        │                              message says what is wrong and what to do
        ├── ConfigError                settings or a model description that cannot work
        ├── RegistryError              MLflow refused or could not answer
        │   └── VersionNotFound
        ├── ReleaseError               a release step cannot go on
        │   └── GitError               a git command failed (its stderr in the message)
        │       └── PushRace           the remote moved between fetch and push
        ├── PlatformError              the local platform cannot start or stop something
        └── ResourceError              a manifest the local platform cannot run

Upstream failures are the only errors whose JSON body contains
``error.upstream_failure``; an InferenceGraph Sequence uses exactly that path as the
``condition`` of its fallback step (``graphs/inferencegraph.chat-fallback.yaml``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


class NexusError(Exception):
    """Root of every error Nexus turns into an HTTP answer."""

    status: int = 500
    error_type: ClassVar[str] = "server_error"
    code: ClassVar[str] = "internal_error"
    upstream_failure: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        upstream: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        self.upstream = upstream
        if status is not None:
            self.status = status
        # Headers every answer carries whatever its outcome (e.g. rate-limit state on a 429).
        self.extra_headers: list[tuple[bytes, bytes]] = []

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "param": self.param,
        }
        if self.upstream_failure:
            error["upstream_failure"] = True
        return {"error": error}

    def body_bytes(self) -> bytes:
        return orjson.dumps(self.body())

    def headers(self) -> list[tuple[bytes, bytes]]:
        if self.retry_after is None:
            return self.extra_headers
        # Retry-After takes whole seconds; round up so a client never retries too early.
        seconds = max(1, int(-(-self.retry_after // 1)))
        return [(b"retry-after", str(seconds).encode()), *self.extra_headers]


class ClientError(NexusError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class InvalidRequest(ClientError):
    status = 400
    code = "invalid_request"


class AuthenticationFailed(ClientError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class ModelNotFound(ClientError):
    status = 404
    error_type = "not_found_error"
    code = "model_not_found"


class RouteNotFound(ClientError):
    status = 404
    error_type = "not_found_error"
    code = "route_not_found"


class MethodNotAllowed(ClientError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class RateLimited(ClientError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamFailure(NexusError):
    status = 502
    error_type = "upstream_error"
    code = "upstream_error"
    upstream_failure = True


class UpstreamUnavailable(UpstreamFailure):
    status = 502
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamFailure):
    status = 504
    code = "upstream_timeout"


class UpstreamServerError(UpstreamFailure):
    status = 502
    code = "upstream_server_error"


class CircuitOpen(UpstreamFailure):
    status = 503
    code = "circuit_open"


class PredictorRejected(ClientError):
    """The predictor refused the request (4xx); its status is kept, no fallback."""

    code = "predictor_rejected"


class LimiterUnavailable(NexusError):
    status = 503
    error_type = "server_error"
    code = "rate_limiter_unavailable"


class OperationalError(NexusError):
    """A command cannot do what was asked; the CLI prints the message, no traceback."""


class ConfigError(OperationalError):
    """Settings that cannot work; raised at start-up, never on the request path."""


class RegistryError(OperationalError):
    """MLflow refused or could not answer; the message says what was asked."""


class VersionNotFound(RegistryError):
    """The registered model or the version does not exist."""


class ReleaseError(OperationalError):
    """A release step cannot go on; the message says why and what to do."""


class GitError(ReleaseError):
    """A git command failed; the message carries its stderr."""


class PushRace(GitError):
    """The remote branch moved between our fetch and our push."""


class PlatformError(OperationalError):
    """A local-platform problem with a message a person can act on."""


class ResourceError(OperationalError):
    """A manifest the local platform cannot run, with the reason."""
