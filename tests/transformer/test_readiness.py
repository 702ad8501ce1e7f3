"""Readiness follows the model registry (issue 12, item 1).

No route can unload a model any more (``test_exposed_routes``), so the registry is changed
in-process here, on KServe's real app, to show that ``/v2/health/ready`` would then fail and
a probe would restart the pod instead of serving 404s with a ready status. The bridge
builds that app itself: KServe's module-level app and predictor context stay untouched.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from nexus.config import load_settings
from nexus.transformer.kserve_bridge import build_kserve_app


# KServe 0.21 answers through FastAPI's deprecated ORJSONResponse; in a server process that
# warning is only logged, under pytest it would become an error.
@pytest.mark.filterwarnings("ignore:ORJSONResponse is deprecated")
def test_ready_is_503_once_a_public_name_is_gone() -> None:
    settings = load_settings(
        {"GATEWAY_API_KEYS": "k", "GATEWAY_MODEL_ALIASES": "primary"},
        model_name="chat",
        predictor_host="127.0.0.1:9",
    )

    # Readiness never calls the predictor: no upstream is opened.
    app = build_kserve_app(settings, None)  # type: ignore[arg-type]

    async def probe() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            before = (await client.get("/v2/health/ready")).status_code
            app.state.nexus_repository.unload("primary")  # type: ignore[attr-defined]
            after = (await client.get("/v2/health/ready")).status_code
            model = (await client.get("/v2/models/primary/ready")).status_code
            still = (await client.get("/v2/models/chat/ready")).status_code
            return [before, after, model, still]

    # The ISVC name and its aliases are one ProxyModel: KServe's ``unload`` stops it (its
    # ``stop`` clears ``ready``), so the name left behind is not ready either.
    assert asyncio.run(probe()) == [200, 503, 404, 503]


@pytest.mark.filterwarnings("ignore:ORJSONResponse is deprecated")
def test_the_bridge_leaves_kserve_module_state_alone() -> None:
    """KServe's process-wide app and predictor context are not ours to change (issue 11)."""
    from kserve import context
    from kserve.model_server import app as kserve_app

    routes = len(kserve_app.routes)
    handlers = dict(kserve_app.exception_handlers)
    predictor = context.get_predictor_config()
    settings = load_settings({"GATEWAY_API_KEYS": "k"}, model_name="chat", predictor_host="p:9")
    app = build_kserve_app(settings, None)  # type: ignore[arg-type]
    assert app is not kserve_app
    assert len(kserve_app.routes) == routes
    assert kserve_app.exception_handlers == handlers
    assert context.get_predictor_config() is predictor

    async def live() -> int:  # KServe's routes are on our app instead
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/v2/health/live")).status_code

    assert asyncio.run(live()) == 200
