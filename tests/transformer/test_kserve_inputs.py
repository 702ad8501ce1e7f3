"""KServe v1/v2 inference: malformed binary headers are 400, bodies are charged tokens.

Issue 12, items 5 and 10, against a real transformer process and the CPU upstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.servers import Transformer, Upstream, transformer
from tests.transformer.conftest import BASE_ENV, KEY

AUTH = {"Authorization": f"Bearer {KEY}"}
TENSOR = orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]})
BAD_LENGTHS: list[str | bytes] = [
    "abc",
    "-1",
    "",
    "1e3",
    "0x10",
    "٣".encode(),
    "1_0",
    "1" * 30,
    str(len(TENSOR) + 1),
    "99999999",
]
BUDGET = 1000
TPM_KEY = "test-key-tpm-1000"


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("value", BAD_LENGTHS)
def test_malformed_inference_header_content_length_is_400(
    client: httpx.Client, value: str | bytes
) -> None:
    headers: dict[str, str | bytes] = {**AUTH, "Inference-Header-Content-Length": value,
               "Content-Type": "application/octet-stream"}  # fmt: skip
    response = client.post("/v2/models/chat/infer", content=TENSOR, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "Inference-Header-Content-Length"


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("json_part", [b"null", b"[1]", b'"s"', b"7", b"{x"])
def test_a_json_part_that_is_not_an_object_is_400(client: httpx.Client, json_part: bytes) -> None:
    """KServe indexes the JSON part: ``null`` was a ``TypeError`` and a 500 (tests/fuzz)."""
    headers = {**AUTH, "Inference-Header-Content-Length": str(len(json_part)),
               "Content-Type": "application/octet-stream"}  # fmt: skip
    response = client.post("/v2/models/chat/infer", content=json_part + b"\0\0", headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "Inference-Header-Content-Length"


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("cut", [0, 5, len(TENSOR) - 1])
def test_a_length_that_cuts_the_json_is_a_4xx(client: httpx.Client, cut: int) -> None:
    headers = {**AUTH, "Inference-Header-Content-Length": str(cut),
               "Content-Type": "application/octet-stream"}  # fmt: skip
    response = client.post("/v2/models/chat/infer", content=TENSOR, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("order", [["abc", "67"], ["67", "abc"], ["67", "67"]])
def test_the_length_header_given_twice_is_400(client: httpx.Client, order: list[str]) -> None:
    headers = [(b"Authorization", f"Bearer {KEY}".encode()),
               (b"Content-Type", b"application/octet-stream"),
               *((b"Inference-Header-Content-Length", v.encode()) for v in order)]  # fmt: skip
    response = client.post("/v2/models/chat/infer", content=TENSOR, headers=headers)
    assert response.status_code == 400, response.text


@pytest.mark.usefixtures("healthy")
def test_a_correct_binary_length_is_served(client: httpx.Client) -> None:
    headers = {**AUTH, "Inference-Header-Content-Length": str(len(TENSOR)),
               "Content-Type": "application/octet-stream"}  # fmt: skip
    response = client.post("/v2/models/chat/infer", content=TENSOR, headers=headers)
    assert response.status_code == 200, response.text


@pytest.fixture
def budget_gateway(tmp_path: Path, llm: Upstream) -> Iterator[Transformer]:
    policies = {TPM_KEY: {"tokens_per_minute": BUDGET, "rate_limit_per_minute": 10_000}}
    env = {**BASE_ENV, "GATEWAY_API_KEYS": f"{BASE_ENV['GATEWAY_API_KEYS']},{TPM_KEY}",
           "GATEWAY_MAX_BODY_BYTES": str(1 << 20),
           "GATEWAY_API_KEY_POLICIES": orjson.dumps(policies).decode()}  # fmt: skip
    with transformer(tmp_path, model="chat", predictor_host=llm.host, env=env) as gw:
        yield gw


V1_BODY = {"instances": [f"instance number {i:03d}" for i in range(100)]}
V2_BODY = {"inputs": [{"name": "x", "shape": [100], "datatype": "BYTES",
                       "data": [f"instance number {i:03d}" for i in range(100)]}]}  # fmt: skip


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize(
    ("path", "body"),
    [("/v1/models/chat:predict", V1_BODY), ("/v2/models/primary/infer", V2_BODY)],
)
def test_kserve_bodies_are_charged_against_the_token_budget(
    budget_gateway: Transformer, path: str, body: dict[str, object]
) -> None:
    auth = {"Authorization": f"Bearer {TPM_KEY}"}
    cost = len(orjson.dumps(body)) // 4 + 1
    with httpx.Client(base_url=budget_gateway.url, timeout=30) as client:
        statuses = [client.post(path, json=body, headers=auth).status_code for _ in range(50)]
    served = statuses.count(200)
    assert statuses.count(429) == 50 - served
    # Before: all 50 calls of ~700 tokens passed a 1,000 tokens/min key.
    assert 1 <= served <= BUDGET // cost, statuses
