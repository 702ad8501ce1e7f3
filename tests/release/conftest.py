"""Real MLflow, real Git, real Prometheus and real transformers for the release tests.

MLflow takes ~30 s to start (schema migrations on a fresh SQLite file), so one server
serves the whole session; tests use distinct model names. Three "revisions" of one
InferenceService are played by three transformers, each in front of its own CPU LLM,
scraped by one Prometheus that adds the ``isvc``/``revision`` target labels the cluster's
PodMonitor (and the local platform's scrape config) add.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port, managed, python_module
from tests.support.servers import Transformer, Upstream, cpu_llm, transformer

API_KEY = "release-test-key"
LIFECYCLE_MODEL = "alpha"


@dataclass
class Mlflow:
    url: str


@pytest.fixture(scope="session", autouse=True)
def _quiet_mlflow_clients() -> Iterator[None]:
    """No usage telemetry from the MLflow clients of steps (kfp.local subprocesses inherit
    the environment): it phones home at exit, which is slow offline and not ours to send."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        yield


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mlflow]:
    tmp = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    args = python_module(
        "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
        "--default-artifact-root", str(tmp / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    )  # fmt: skip
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    with managed(args, log=tmp / "mlflow.log", env=env,
                 ready_url=f"http://127.0.0.1:{port}/health", timeout=120):  # fmt: skip
        yield Mlflow(url=f"http://127.0.0.1:{port}")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def gitops_repo(tmp_path: Path) -> Path:
    """An empty bare repository whose default branch is ``main``."""
    repo = tmp_path / "gitops.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(repo))
    return repo


@dataclass
class StatusApi:
    url: str

    def set_ready(self, ready: bool) -> None:
        httpx.post(f"{self.url}/admin/state", json={"ready": ready}).raise_for_status()


@pytest.fixture
def status_api(tmp_path: Path, gitops_repo: Path) -> Iterator[StatusApi]:
    port = free_port()
    args = python_module("tests.release.status_double", "--port", str(port),
                         "--repo", str(gitops_repo))  # fmt: skip
    with managed(args, log=tmp_path / "status.log", ready_url=f"http://127.0.0.1:{port}/healthz"):
        yield StatusApi(url=f"http://127.0.0.1:{port}")


@dataclass
class Revision:
    name: str
    llm: Upstream
    gateway: Transformer


@dataclass
class Fleet:
    """Revisions 1..3 of the lifecycle model, and the Prometheus scraping them."""

    revisions: list[Revision]
    prometheus_url: str


def _prometheus_config(targets: list[tuple[str, Transformer]]) -> str:
    jobs = [
        {
            "job_name": revision,
            "scrape_interval": "1s",
            "static_configs": [
                {
                    "targets": [f"127.0.0.1:{gw.port}"],
                    "labels": {"isvc": LIFECYCLE_MODEL, "revision": revision},
                }
            ],
        }
        for revision, gw in targets
    ]
    return json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed; run `make system-deps`")
    tmp = tmp_path_factory.mktemp("fleet")
    env = {"GATEWAY_API_KEYS": API_KEY, "GATEWAY_RATE_LIMIT_PER_MINUTE": "0",
           "GATEWAY_TOKENS_PER_MINUTE": "0"}  # fmt: skip
    with contextlib.ExitStack() as stack:
        revisions = []
        for n in (1, 2, 3):
            llm = stack.enter_context(cpu_llm(tmp, model=LIFECYCLE_MODEL))
            gw = stack.enter_context(
                transformer(tmp, model=LIFECYCLE_MODEL, predictor_host=llm.host, env=env)
            )
            revisions.append(Revision(f"{LIFECYCLE_MODEL}-predictor-{n:05d}", llm, gw))
        config = tmp / "prometheus.yml"
        config.write_text(_prometheus_config([(r.name, r.gateway) for r in revisions]))
        port = free_port()
        args = [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
        stack.enter_context(managed(args, log=tmp / "prometheus.log",
                                    ready_url=f"http://127.0.0.1:{port}/-/ready"))  # fmt: skip
        yield Fleet(revisions=revisions, prometheus_url=f"http://127.0.0.1:{port}")


class Traffic:
    """Chat completions sent to every revision's transformer until stopped (a thread:
    the pipeline under test blocks the test's own thread)."""

    def __init__(self, revisions: list[Revision]) -> None:
        self._revisions = revisions
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.sent = 0

    def _run(self) -> None:
        body = {"model": LIFECYCLE_MODEL, "max_tokens": 2,
                "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                for revision in self._revisions:
                    with contextlib.suppress(httpx.HTTPError):
                        client.post(f"{revision.gateway.url}/v1/chat/completions",
                                    json=body, headers=headers)  # fmt: skip
                        self.sent += 1
                self._stop.wait(0.02)

    def __enter__(self) -> Traffic:
        # httpx logs every request at INFO; the pipeline's log is not the place for them.
        self._httpx_level = logging.getLogger("httpx").level
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        logging.getLogger("httpx").setLevel(self._httpx_level)


def set_faults(llm: Upstream, **faults: float) -> None:
    httpx.post(f"{llm.url}/admin/faults", json=faults).raise_for_status()


def python() -> str:
    return sys.executable
