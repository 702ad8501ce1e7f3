"""The BentoML CPU worker as a real process on free ports, as the local platform starts it."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import REPO, Managed, free_port, managed

ENTRY = REPO / "bento" / "cpu_worker.py"


@dataclass
class Worker:
    port: int
    admin_port: int
    process: Managed
    model: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def set_faults(self, **faults: object) -> dict[str, object]:
        """Change faults through the admin port, which stays open while refusing."""
        response = httpx.post(f"{self.admin_url}/admin/faults", json=faults)
        response.raise_for_status()
        return dict(response.json()["faults"])

    def metric(self, sample: str) -> float:
        """The value of one exposed sample, e.g. ``vllm:prompt_tokens_total{model_name="chat"}``."""
        text = httpx.get(f"{self.admin_url}/metrics").text
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


@contextlib.contextmanager
def cpu_worker(
    tmp: Path, *args: str, model: str = "chat", refusing: bool = False
) -> Iterator[Worker]:
    """``python bento/cpu_worker.py`` with KServe's flag spelling; ready when /health answers."""
    import sys

    port, admin = free_port(), free_port()
    cmd = [sys.executable, str(ENTRY), "--host", "127.0.0.1", "--model-name", model,
           "--port", str(port), "--admin-port", str(admin), *args]  # fmt: skip
    ready = f"http://127.0.0.1:{admin if refusing else port}/health"
    with managed(cmd, log=tmp / f"cpu-worker-{port}.log", ready_url=ready) as process:
        yield Worker(port=port, admin_port=admin, process=process, model=model)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One healthy worker shared by a module; tests that break it restore its faults."""
    with cpu_worker(tmp_path_factory.mktemp("bento")) as server:
        yield server


@pytest.fixture
def clean_worker(worker: Worker) -> Iterator[Worker]:
    """The shared worker, with every fault cleared afterwards whatever the test did."""
    try:
        yield worker
    finally:
        worker.set_faults(error_ratio=0.0, hang=False, break_stream_after=0, refuse=False,
                          token_latency_ms=0.0, first_token_latency_ms=0.0)  # fmt: skip
