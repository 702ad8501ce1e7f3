"""The route table: one entry per path or pattern, each with its guard and handler."""

from __future__ import annotations

import re

import pytest

from nexus.config import GatewaySettings
from nexus.observability import AccessLog, TransformerMetrics, new_registry
from nexus.transformer.app import Transformer
from nexus.transformer.routes import Keyed, Open


def _table() -> Transformer:
    async def no_app(*_: object) -> None:
        raise AssertionError("never served")

    settings = GatewaySettings(model_name="chat", predictor_host="127.0.0.1:9", api_keys=("k",))
    return Transformer(
        settings=settings,
        metrics=TransformerMetrics(new_registry(), tenant_label=False),
        build_kserve_app=lambda _upstream: no_app,
        access_log=AccessLog("nexus.test"),
    )


def test_no_exact_path_is_also_matched_by_a_pattern() -> None:
    """``Routes.match`` looks exact paths up first; that is only sound if they are disjoint."""
    table = _table().routes.routes
    exact = [r.path for r in table if isinstance(r.path, str)]
    patterns = [r.path for r in table if isinstance(r.path, re.Pattern)]
    assert exact
    assert patterns
    assert [(p, q.pattern) for p in exact for q in patterns if q.fullmatch(p)] == []
    assert len(exact) == len(set(exact))


@pytest.mark.parametrize(
    ("path", "guard", "label", "model"),
    [
        ("/v1/chat/completions", Keyed, "/v1/chat/completions", None),
        ("/openai/v1/embeddings", Keyed, "/openai/v1/embeddings", None),
        ("/v1/models", Keyed, "/v1/models", None),
        ("/v2/models", Keyed, "/v2/models", None),
        ("/v1/models/chat:predict", Keyed, "/v1/models/{name}:predict", "chat"),
        ("/v1/models/chat:explain", Keyed, "/v1/models/{name}:explain", "chat"),
        ("/v2/models/chat/infer", Keyed, "/v2/models/{name}/infer", "chat"),
        ("/v2/models/chat", Keyed, "/v2/models/{name}", "chat"),
        ("/v2", Keyed, "/v2", None),
        ("/metrics", Open, None, None),
        ("/", Open, None, None),
        ("/v2/health/ready", Open, None, None),
        ("/v2/models/chat/ready", Open, None, None),
        ("/v1/models/chat", Open, None, None),
    ],
)
def test_each_path_finds_its_guard_label_and_model(
    path: str, guard: type, label: str | None, model: str | None
) -> None:
    found = _table().routes.match(path)
    assert found is not None
    route, named = found
    assert isinstance(route, guard)
    assert named == model
    if isinstance(route, Keyed):
        assert route.label == label


@pytest.mark.parametrize(
    "path",
    ["/v2/repository/models/chat/load", "/openapi.json", "/docs", "/v2/models/chat/versions/1",
     "/v1/chat/completions/", "/v2/", "/v1/models/chat:unknown"],
)  # fmt: skip
def test_what_the_table_does_not_list_is_not_served(path: str) -> None:
    assert _table().routes.match(path) is None
