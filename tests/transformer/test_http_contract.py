"""The transformer's HTTP contract, over real sockets: auth, validation, routing, headers."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.support.servers import Transformer, Upstream
from tests.transformer.conftest import (
    KEY,
    LIMITED_KEY,
    MAX_BODY,
    chat,
    set_faults,
    token,
    upstream_stats,
)

AUTH = {"Authorization": f"Bearer {KEY}"}


def error_of(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, object] = body["error"]
    assert {"message", "type", "code"} <= set(error)
    return error


@pytest.mark.usefixtures("healthy")
def test_chat_completion_answers_with_request_id_and_rate_limit_headers(
    client: httpx.Client,
) -> None:
    response = client.post("/openai/v1/chat/completions", json=chat(), headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] == 4
    assert len(response.headers["x-request-id"]) == 32
    for kind in ("requests", "tokens"):
        for field in ("limit", "remaining", "reset"):
            assert response.headers[f"x-ratelimit-{field}-{kind}"]


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("path", ["/v1/completions", "/openai/v1/completions"])
def test_completions_and_embeddings(client: httpx.Client, path: str) -> None:
    response = client.post(
        path, json={"model": "chat", "prompt": "hi", "max_tokens": 3}, headers=AUTH
    )
    assert response.status_code == 200
    assert response.json()["object"] == "text_completion"
    response = client.post(
        "/v1/embeddings", json={"model": "chat", "input": ["a", "b"]}, headers=AUTH
    )
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing credentials"),
        ({"Authorization": "Bearer nope"}, "invalid API key"),
        ({"X-API-Key": "nope"}, "invalid API key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing credentials"),
        ({"Authorization": f"Bearer {token(exp=int(time.time()) - 120)}"}, "expired"),
        ({"Authorization": f"Bearer {token()[:-4]}AAAA"}, "signature"),
        ({"Authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}, "not accepted"),
    ],
)
def test_authentication_failures_are_401(
    client: httpx.Client, headers: dict[str, str], message: str
) -> None:
    response = client.post("/v1/chat/completions", json=chat(), headers=headers)
    assert response.status_code == 401
    error = error_of(response)
    assert error["type"] == "authentication_error"
    assert message in str(error["message"])
    assert "upstream_failure" not in error


def test_model_not_allowed_is_403(client: httpx.Client) -> None:
    by_policy = client.post("/v1/chat/completions", json=chat(), headers={"X-API-Key": LIMITED_KEY})
    assert by_policy.status_code == 403
    by_claim = client.post(
        "/v1/chat/completions",
        json=chat(),
        headers={"Authorization": f"Bearer {token(models=['x'])}"},
    )
    assert by_claim.status_code == 403
    assert error_of(by_claim)["code"] == "model_not_allowed"


@pytest.mark.usefixtures("healthy")
def test_jwt_with_allowed_models_claim_passes(client: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {token(models=['chat'])}"}
    assert client.post("/v1/chat/completions", json=chat(), headers=headers).status_code == 200


def test_unknown_model_is_404(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=chat("gpt-9"), headers=AUTH)
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[]", None),
        (orjson.dumps({"model": "chat"}), "messages"),
        (orjson.dumps({"model": "chat", "messages": "hi"}), "messages"),
        (orjson.dumps({**chat(), "max_tokens": "many"}), "max_tokens"),
        (orjson.dumps({**chat(), "stream": 1}), "stream"),
    ],
)
def test_malformed_bodies_are_400_never_500(
    client: httpx.Client, body: bytes, param: str | None
) -> None:
    response = client.post("/v1/chat/completions", content=body, headers=AUTH)
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == param
    assert "upstream_failure" not in error


def test_huge_bodies_are_413_declared_or_streamed(client: httpx.Client) -> None:
    big = orjson.dumps(chat(pad="x" * MAX_BODY))
    declared = client.post("/v1/chat/completions", content=big, headers=AUTH)
    assert declared.status_code == 413
    assert error_of(declared)["code"] == "payload_too_large"

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    chunked = client.post("/v1/chat/completions", content=chunks(), headers=AUTH)
    assert chunked.status_code == 413


def test_wrong_method_is_405(client: httpx.Client) -> None:
    response = client.get("/v1/chat/completions", headers=AUTH)
    assert response.status_code == 405


@pytest.mark.usefixtures("healthy")
def test_models_lists_what_the_principal_may_use(client: httpx.Client) -> None:
    listed = client.get("/v1/models", headers=AUTH).json()
    assert [m["id"] for m in listed["data"]] == ["chat", "primary"]
    limited = client.get("/openai/v1/models", headers={"X-API-Key": LIMITED_KEY}).json()
    assert limited["data"] == []
    assert client.get("/v1/models").status_code == 401


def test_alias_is_rewritten_and_credentials_are_not_forwarded(
    client: httpx.Client, healthy: Upstream
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    response = client.post(
        "/v1/chat/completions",
        json=chat("primary"),
        headers={**AUTH, "X-Request-Id": "req-123", "traceparent": traceparent},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "req-123"
    seen = {k.lower(): v for k, v in upstream_stats(healthy)["last_headers"].items()}
    assert seen["x-request-id"] == "req-123"
    assert seen["traceparent"] == traceparent
    assert "authorization" not in seen
    assert "x-api-key" not in seen


@pytest.mark.usefixtures("healthy")
def test_unsafe_request_id_is_replaced(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions", json=chat(), headers={**AUTH, "X-Request-Id": "a b\tc<script>"}
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] != "a b\tc<script>"
    assert len(response.headers["x-request-id"]) == 32


def test_upstream_5xx_carries_the_fallback_marker(client: httpx.Client, healthy: Upstream) -> None:
    set_faults(healthy, error_ratio=1.0, error_status=503)
    response = client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert response.status_code == 502
    error = error_of(response)
    assert error["upstream_failure"] is True
    assert error["code"] == "upstream_server_error"
    assert response.headers["x-ratelimit-limit-requests"]


def test_upstream_4xx_passes_through_without_marker(
    client: httpx.Client, healthy: Upstream
) -> None:
    set_faults(healthy, error_ratio=1.0, error_status=400)
    response = client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    assert response.status_code == 400
    assert b"upstream_failure" not in response.content
    assert b"injected fault" in response.content


@pytest.mark.usefixtures("healthy")
def test_health_routes_need_no_credentials(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v1/models/chat").json() == {"name": "chat", "ready": True}


@pytest.mark.usefixtures("healthy")
def test_metrics_export_the_transformer_families(client: httpx.Client) -> None:
    client.post("/v1/chat/completions", json=chat(), headers=AUTH)
    client.post("/v1/chat/completions", json=chat(), headers={"X-API-Key": "bad"})
    text = client.get("/metrics").text
    for family in (
        "nexus_transformer_requests_total",
        "nexus_transformer_request_duration_seconds_bucket",
        "nexus_transformer_in_flight_requests",
        "nexus_transformer_upstream_requests_total",
        "nexus_transformer_upstream_duration_seconds_bucket",
        "nexus_transformer_circuit_state",
        "nexus_transformer_limiter_degraded",
        "nexus_transformer_tokens_total",
    ):
        assert family in text, family
    assert (
        'nexus_transformer_requests_total{method="POST",path="/v1/chat/completions",status="401"}'
        in text
    )
    assert KEY not in text


@pytest.mark.usefixtures("healthy")
def test_one_json_log_line_per_request_without_secrets(
    client: httpx.Client, gateway: Transformer
) -> None:
    response = client.post(
        "/v1/chat/completions", json=chat(), headers={**AUTH, "X-Request-Id": "log-probe-1"}
    )
    assert response.status_code == 200
    deadline = time.monotonic() + 5
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and not lines:
        lines = [
            orjson.loads(line)
            for line in gateway.process.output().splitlines()
            if '"log-probe-1"' in line
        ]
    assert len(lines) == 1
    entry = lines[0]
    assert entry["status"] == 200
    assert entry["path"] == "/v1/chat/completions"
    assert entry["model"] == "chat"
    assert str(entry["principal"]).startswith("key:")
    assert entry["tokens"] == {"prompt": 1, "completion": 4, "total": 5}
    assert {"timestamp", "level", "message", "duration_ms", "upstream", "trace_id"} <= set(entry)
    assert KEY not in gateway.process.output()
