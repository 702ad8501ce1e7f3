"""A real MLflow tracking server on a free port, as the tests start it.

Run as ``nexus up`` runs it: without MLflow 3's job execution (``MLFLOW_ENV``), which would
start a job runner and seven huey consumers that no test uses (about 1 GiB on this kind of
machine), on a fresh SQLite file; ``--workers 1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nexus.local.platform import MLFLOW_ENV
from tests.support.processes import free_port, managed, python_module


@contextmanager
def mlflow_server(tmp: Path, *, timeout: float = 300) -> Iterator[str]:
    """Yield the URL of an MLflow server keeping its state under ``tmp``."""
    port = free_port()
    args = python_module(
        "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
        "--default-artifact-root", str(tmp / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    )  # fmt: skip
    env = {**MLFLOW_ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with managed(args, log=tmp / "mlflow.log", env=env,
                 ready_url=f"http://127.0.0.1:{port}/health", timeout=timeout):  # fmt: skip
        yield f"http://127.0.0.1:{port}"
