"""Which KServe routes the transformer exposes, and what they reveal (issue 12, items 1, 11).

Every case runs against a real transformer process and the CPU upstream; the counts of
hostile cases tried here feed the README's "Reliability: transformer" figures.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port
from tests.support.servers import transformer
from tests.transformer.conftest import BASE_ENV, KEY, LIMITED_KEY, chat, token

AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITED = {"Authorization": f"Bearer {LIMITED_KEY}"}
NO_KEY: dict[str, str] = {}

REPOSITORY = [
    f"/v2/repository/models/{name}/{verb}"
    for name in ("chat", "primary", "nope")
    for verb in ("load", "unload")
]
HIDDEN = ["/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/v2/repository/index"]


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("credentials", [NO_KEY, AUTH, {"X-API-Key": KEY}])
def test_repository_load_and_unload_are_absent(
    client: httpx.Client, credentials: dict[str, str]
) -> None:
    for path in REPOSITORY:
        for method in ("POST", "GET", "PUT", "DELETE"):
            response = client.request(method, path, headers=credentials)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "route_not_found"
    # Still served and still ready after every attempt.
    assert client.post("/v1/chat/completions", json=chat(), headers=AUTH).status_code == 200
    assert (
        client.post("/v1/chat/completions", json=chat("primary"), headers=AUTH).status_code == 200
    )
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/chat/ready").json() == {"name": "chat", "ready": True}


@pytest.mark.parametrize("path", HIDDEN)
def test_openapi_and_docs_are_absent(client: httpx.Client, path: str) -> None:
    for credentials in (NO_KEY, AUTH):
        response = client.get(path, headers=credentials)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "route_not_found"
        assert b"swagger" not in response.content.lower()


def test_metadata_needs_a_key_and_permission(client: httpx.Client) -> None:
    for path in ("/v2", "/v2/models", "/v2/models/chat"):
        assert client.get(path).status_code == 401, path
    # KServe 0.21 answers any model version with a 500 (NotImplementedError): not exposed.
    for path in ("/v2/models/chat/versions/1", "/v2/models/chat/versions/1/ready"):
        assert client.get(path, headers=AUTH).status_code == 404, path
    versioned = client.post("/v2/models/chat/versions/1/infer", json=V2_BODY, headers=AUTH)
    assert versioned.status_code == 404
    assert client.get("/v2", headers=AUTH).status_code == 200
    assert client.get("/v2/models/chat", headers=AUTH).json()["name"] == "chat"
    assert client.get("/v2/models/chat", headers=LIMITED).status_code == 403
    assert client.get("/v2/models/nope", headers=AUTH).status_code == 404


def test_model_lists_show_only_what_the_credential_may_use(client: httpx.Client) -> None:
    assert client.get("/v2/models", headers=AUTH).json() == {"models": ["chat", "primary"]}
    assert client.get("/v2/models", headers=LIMITED).json() == {"models": []}
    only_chat = {"Authorization": f"Bearer {token(models=['chat'])}"}
    assert client.get("/v2/models", headers=only_chat).json() == {"models": ["chat"]}


def test_unknown_model_does_not_list_the_served_ones(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json=chat("gpt-9"), headers=AUTH)
    assert response.status_code == 404
    assert "primary" not in response.text
    response = client.post("/v2/models/gpt-9/infer", json={"inputs": []}, headers=AUTH)
    assert response.status_code == 404
    assert "primary" not in response.text


@pytest.mark.parametrize("path", ["/v2/health/live/", "/v2/models/", "/v1/models/chat/", "/v2/"])
def test_no_redirect_built_from_the_host_header(client: httpx.Client, path: str) -> None:
    response = client.get(path, headers={"Host": "evil.example", **AUTH})
    assert response.status_code == 404
    assert "location" not in response.headers
    assert "evil.example" not in response.text


def test_upstream_failures_do_not_show_the_predictor_address(tmp_path: Path) -> None:
    port = free_port()
    with transformer(
        tmp_path, model="chat", predictor_host=f"127.0.0.1:{port}", env=BASE_ENV
    ) as gw, httpx.Client(base_url=gw.url, timeout=30) as c:  # fmt: skip
        bodies = [
            c.post("/v1/chat/completions", json=chat(), headers=AUTH),
            c.post("/v1/chat/completions", json=chat(stream=True), headers=AUTH),
            c.post("/v1/models/chat:predict", json={"instances": [1]}, headers=AUTH),
            c.post("/v2/models/chat/infer", json=V2_BODY, headers=AUTH),
        ]
        for response in bodies:
            assert response.status_code in (502, 503), response.text
            assert response.json()["error"]["upstream_failure"] is True
            for leak in (str(port), "127.0.0.1", "Cannot connect", "aiohttp", "Errno"):
                assert leak not in response.text, (leak, response.text)
        # The detail is kept where operators look: the transformer's log.
        assert str(port) in gw.process.output()


V2_BODY = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]}
