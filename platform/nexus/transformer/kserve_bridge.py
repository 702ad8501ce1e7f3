"""KServe's own model server app, with a model that proxies v1/v2 inference to the predictor.

KServe decodes and validates v1/v2 bodies (a malformed v2 tensor is KServe's 400, as
users of KServe expect); ``ProxyModel.predict`` then sends the request to the predictor
through the same ``Upstream`` (and circuit breaker) as the OpenAI routes. Errors from the
predictor become Nexus errors with the usual body shape and fallback marker.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from nexus.config import GatewaySettings
from nexus.edge.asgi import ForeignApp
from nexus.errors import NexusError, PredictorRejected, UpstreamFailure
from nexus.transformer.upstream import Upstream, public_body

log = logging.getLogger("nexus.transformer")
FORWARD = ("x-request-id", "traceparent", "tracestate")


def build_kserve_app(settings: GatewaySettings, upstream: Upstream) -> ForeignApp:
    """A FastAPI app of our own with KServe's routes, middleware and error handlers.

    KServe's ``RESTServer.create_application`` always decorates the module-level app of
    ``kserve.model_server`` (``import_from_string("kserve.model_server:app")`` in
    ``kserve/protocol/rest/server.py``, 0.21.0 and master aaac4e294 alike), a process-wide
    singleton. Its three steps, ``_add_middlewares``, ``_register_endpoints`` and
    ``_add_exception_handlers``, each take the app as an argument, so they are applied to
    an app built here instead: nothing of KServe's module state is changed, and the
    predictor settings live on our model and data plane (their ``predictor_config``
    properties), not in ``kserve.context``.
    """
    # Imported here: KServe parses sys.argv and builds its own app at import time.
    from importlib import metadata

    from fastapi import FastAPI, Request
    from fastapi.responses import ORJSONResponse, Response
    from kserve.model_repository import ModelRepository
    from kserve.predictor_config import PredictorConfig
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    predictor = PredictorConfig(
        predictor_host=settings.predictor_host,
        predictor_use_ssl=settings.predictor_use_ssl,
        predictor_request_timeout_seconds=int(settings.request_timeout_seconds),
    )
    model = ProxyModel(
        settings.model_name, served_name=settings.served_model_name, upstream=upstream,
        predictor=predictor,
    )  # fmt: skip
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

        @property
        def predictor_config(self) -> PredictorConfig:
            return predictor

        async def ready(self) -> bool:
            if not all([await repository.is_model_ready(name) for name in names]):
                return False
            return bool(await super().ready())

    # The same settings KServe's module-level app is made with (kserve/model_server.py).
    app = FastAPI(
        title="KServe ModelServer",
        version=metadata.version("kserve"),
        docs_url=None,
        redoc_url=None,
        default_response_class=ORJSONResponse,
    )
    server = RESTServer(
        app,
        ServedDataPlane(model_registry=repository),
        ModelRepositoryExtension(model_registry=repository),
        http_port=0,
    )
    server._add_middlewares(app)
    server._register_endpoints(app)
    server._add_exception_handlers(app)

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
    return app


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

    def __init__(self, name: str, *, served_name: str, upstream: Upstream, predictor: Any) -> None:
        super().__init__(name)
        self._served_name = served_name
        self._upstream = upstream
        self._predictor = predictor

    @property
    def predictor_config(self) -> Any:
        """Ours, not ``kserve.context``'s process-wide one (``kserve/model.py`` reads that)."""
        return self._predictor

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
        upstream = self._upstream
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
