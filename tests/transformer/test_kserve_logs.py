"""KServe's refusals are one JSON warning line, and ``:explain`` is logged as itself (item 12)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.servers import Transformer, Upstream, transformer
from tests.transformer.conftest import BASE_ENV, KEY

AUTH = {"Authorization": f"Bearer {KEY}"}
# Bodies KServe itself refuses: the v1 ones through its logging exception handlers
# (``True``), the v2 ones through FastAPI's request validation (422, not logged).
REFUSED = [
    ("/v1/models/chat:predict", b'{"instances": 5}', True),
    ("/v1/models/chat:predict", b'{"instances": {"a": 1}}', True),
    ("/v1/models/chat:predict", b'{"instances": "abc"}', True),
    ("/v1/models/chat:explain", b'{"instances": [1]}', True),
    ("/v2/models/chat/infer", b'{"inputs": [{"name": "x"}]}', False),
    ("/v2/models/chat/infer", b'{"inputs": 7}', False),
]


@pytest.fixture
def fresh_gateway(tmp_path: Path, healthy: Upstream) -> Iterator[Transformer]:
    """A transformer of its own, so its whole log is this test's."""
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=BASE_ENV) as gw:
        yield gw


def test_kserve_refusals_are_one_warning_line_each(fresh_gateway: Transformer) -> None:
    statuses = []
    with httpx.Client(base_url=fresh_gateway.url, timeout=30) as client:
        for i, (path, body, _) in enumerate(REFUSED):
            headers = {**AUTH, "Content-Type": "application/json", "X-Request-Id": f"refused-{i}"}
            response = client.post(path, content=body, headers=headers)
            statuses.append(response.status_code)
            assert response.status_code in (400, 422, 501), (path, body, response.text)
    time.sleep(0.5)
    output = fresh_gateway.process.output()
    assert "Traceback" not in output
    entries = [orjson.loads(line) for line in output.splitlines() if line.strip()]
    kserve = [e for e in entries if e["logger"] == "kserve" and "answered" in e["message"]]
    assert len(kserve) == sum(logged for *_, logged in REFUSED), kserve
    assert {e["level"] for e in kserve} == {"warning"}
    assert all(len(orjson.dumps(e)) < 1000 for e in kserve)
    access = {e.get("request_id"): e for e in entries if "request_id" in e}
    assert access["refused-3"]["path"] == "/v1/models/{name}:explain"
    assert access["refused-0"]["path"] == "/v1/models/{name}:predict"
    assert [access[f"refused-{i}"]["status"] for i in range(len(REFUSED))] == statuses
