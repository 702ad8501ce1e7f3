"""KServe's own model server app, with a model that proxies v1/v2 inference to the predictor.

KServe decodes and validates v1/v2 bodies (a malformed v2 tensor is KServe's 400, as
users of KServe expect); ``ProxyModel.predict`` then sends the request to the predictor
through the same ``Upstream`` (and circuit breaker) as the OpenAI routes. Errors from the
predictor become Nexus errors with the usual body shape and fallback marker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from nexus.asgi import ASGIApp
from nexus.config import GatewaySettings
from nexus.errors import NexusError, PredictorRejected, UpstreamFailure
from nexus.transformer.upstream import Upstream, public_body

log = logging.getLogger("nexus.transformer")
FORWARD = ("x-request-id", "traceparent", "tracestate")


def build_kserve_app(settings: GatewaySettings, upstream: Callable[[], Upstream]) -> ASGIApp:
    """KServe's FastAPI app with our model registered under the ISVC name and its aliases."""
    # Imported here: KServe parses sys.argv and builds its app at import time.
    from fastapi import Request
    from fastapi.responses import Response
    from kserve import context as kserve_context
    from kserve.model_repository import ModelRepository
    from kserve.model_server import app
    from kserve.predictor_config import PredictorConfig
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    kserve_context.set_predictor_config(
        PredictorConfig(
            predictor_host=settings.predictor_host,
            predictor_use_ssl=settings.predictor_use_ssl,
            predictor_request_timeout_seconds=int(settings.request_timeout_seconds),
        )
    )
    model = ProxyModel(
        settings.model_name, served_name=settings.served_model_name, upstream=upstream
    )
    model.load()
    repository = ModelRepository()
    for name in settings.public_models:
        repository.update(model, name)
    names = settings.public_models

    class ServedDataPlane(DataPlane):  # type: ignore[misc]
        """``/v2/health/ready`` is 503 unless every public name is registered and ready.

        KServe 0.21's ``DataPlane.ready`` (``kserve/protocol/dataplane.py``) answers True
        for a transformer whatever its registry holds, so a model removed from the
        registry left readiness at 200 and no probe restarted the pod (issue 12, item 1).
        """

        async def ready(self) -> bool:
            if not all([await repository.is_model_ready(name) for name in names]):
                return False
            return bool(await super().ready())

    server = RESTServer(
        "kserve.model_server:app",
        ServedDataPlane(model_registry=repository),
        ModelRepositoryExtension(model_registry=repository),
        http_port=0,
    )
    server.create_application()

    async def nexus_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, NexusError)
        if isinstance(exc, UpstreamFailure):
            log.warning("predictor call failed: %s", exc.message)
        headers = {k.decode(): v.decode() for k, v in exc.headers()}
        return Response(
            public_body(exc), status_code=exc.status, headers=headers, media_type="application/json"
        )

    app.add_exception_handler(NexusError, nexus_error)
    # The registry readiness is computed from; KServe keeps it only inside its endpoints.
    app.state.nexus_repository = repository
    _quiet_client_errors()
    return app  # type: ignore[no-any-return]


class AnsweredErrors(logging.Filter):
    """KServe's answered refusals as one warning line each, without the traceback.

    Every exception handler in KServe 0.21's ``kserve/errors.py`` logs
    ``logger.error("Exception:", exc_info=exc)`` before answering, so each malformed v1 body
    became a 3 KB traceback at level error (issue 12, item 12). For the exceptions that are
    answers (4xx, 501, 503) the record is rewritten; anything else, a genuine 500, keeps
    its traceback.
    """

    def __init__(self, answered: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self._answered = answered

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.msg == "Exception:" and isinstance(exc, self._answered):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            text = "".join(c for c in str(exc)[:300] if c.isprintable())
            record.msg, record.args = "kserve answered %s: %s", (type(exc).__name__, text)
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_client_errors() -> None:
    from kserve import errors
    from kserve.logging import KSERVE_LOGGER_NAME

    kserve_log = logging.getLogger(KSERVE_LOGGER_NAME)
    if any(isinstance(f, AnsweredErrors) for f in kserve_log.filters):
        return
    answered = (
        errors.InvalidInput,
        errors.ModelNotFound,
        errors.ModelNotReady,
        errors.UnsupportedProtocol,
        errors.ServerNotReady,
        errors.ServerNotLive,
        NotImplementedError,
    )
    kserve_log.addFilter(AnsweredErrors(answered))


def _proxy_model_base() -> type:
    from kserve import Model

    return Model  # type: ignore[no-any-return]


class ProxyModel(_proxy_model_base()):  # type: ignore[misc]
    """A KServe model whose predictions come from the predictor behind the transformer."""

    def __init__(self, name: str, *, served_name: str, upstream: Callable[[], Upstream]) -> None:
        super().__init__(name)
        self._served_name = served_name
        self._upstream = upstream

    def load(self) -> bool:
        self.ready = True
        return True

    async def predict(
        self, payload: Any, headers: Mapping[str, str] | None = None, response_headers: Any = None
    ) -> Any:
        from kserve.protocol.infer_type import InferRequest, InferResponse

        forward = {"Content-Type": "application/json"}
        for name in FORWARD:
            if headers and headers.get(name):
                forward[name] = headers[name]
        if isinstance(payload, InferRequest):
            rest, _ = payload.to_rest()
            body = rest if isinstance(rest, bytes) else orjson.dumps(rest)
            path = f"/v2/models/{self._served_name}/infer"
        else:
            # KServe hands over the raw bytes when the client sent no JSON content type.
            body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            path = f"/v1/models/{self._served_name}:predict"
        upstream = self._upstream()
        reply = await upstream.open("POST", path, body, forward)
        data = await upstream.read(reply)
        if reply.status >= 400:
            raise PredictorRejected(
                f"predictor refused the request: {data[:512].decode(errors='replace')}",
                status=reply.status,
            )
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise NexusError("predictor answered a body that is not JSON") from exc
        if isinstance(payload, InferRequest):
            return InferResponse.from_rest(answer)
        return answer
