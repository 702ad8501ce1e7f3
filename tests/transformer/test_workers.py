"""``--workers N``: several processes on one port, one merged ``/metrics``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.servers import Upstream, transformer
from tests.transformer.conftest import BASE_ENV, KEY, chat


@pytest.mark.usefixtures("healthy")
def test_two_workers_serve_and_report_together(tmp_path: Path, healthy: Upstream) -> None:
    env = {**BASE_ENV, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    (tmp_path / "metrics").mkdir()
    with transformer(tmp_path, model="chat", predictor_host=healthy.host, env=env, workers=2) as gw:
        children = Path(f"/proc/{gw.process.pid}/task/{gw.process.pid}/children").read_text()
        workers = [
            pid
            for pid in children.split()
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert len(workers) == 2
        with httpx.Client(base_url=gw.url) as client:
            for _ in range(20):
                response = client.post(
                    "/v1/chat/completions", json=chat(), headers={"X-API-Key": KEY}
                )
                assert response.status_code == 200
        total = 0.0
        for line in httpx.get(f"{gw.url}/metrics").text.splitlines():
            if line.startswith(
                'nexus_transformer_requests_total{method="POST",path="/v1/chat/completions",status="200"'
            ):
                total += float(line.rsplit(" ", 1)[1])
        assert total == 20
