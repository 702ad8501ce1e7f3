"""Real MLflow, real Git, real Prometheus and the real local control plane for release tests.

MLflow takes ~30 s to start (schema migrations on a fresh SQLite file; 90 s and more on a
loaded 2-core machine, hence its 300 s start timeout), so one server
serves the whole session; tests use distinct model names. ``local_platform`` is the local
platform's controller (``python -m nexus.local.controller``) syncing the test's bare GitOps
repository into real revisions (CPU worker + transformer each) behind a front, scraped by
a Prometheus whose config the controller writes, with the ``isvc``/``revision`` target
labels the analysis queries. ``status_api`` is the small double kept for unit-level tests
of the wait step (see its docstring).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.mlflow import mlflow_server as mlflow_server_at
from tests.support.processes import REPO, free_port, free_port_range, managed, python_module

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
    with mlflow_server_at(tmp_path_factory.mktemp("mlflow")) as url:
        yield Mlflow(url=url)


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


ISVC_API = "/apis/serving.kserve.io/v1beta1/namespaces/nexus/inferenceservices"


@dataclass
class LocalPlatform:
    """The controller's status API and Prometheus; revisions' ports from its port book."""

    state: Path
    status_url: str
    prometheus_url: str

    def front(self, isvc: str) -> str:
        response = httpx.get(f"{self.status_url}{ISVC_API}/{isvc}")
        response.raise_for_status()
        return str(response.json()["status"]["url"])

    def worker_url(self, revision: str) -> str | None:
        """The CPU worker of ``revision`` once it answers ``/health``, else ``None``."""
        try:
            ports = json.loads((self.state / "ports.json").read_text())["ports"]
        except (OSError, ValueError, KeyError):
            return None
        if revision not in ports:
            return None
        url = f"http://127.0.0.1:{ports[revision]}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url
        return None


@contextlib.contextmanager
def local_platform_at(
    tmp_path: Path, gitops_repo: Path, *controller_args: str, start_timeout: float = 60.0
) -> Iterator[LocalPlatform]:
    """The local control plane on ``gitops_repo`` and its Prometheus; ``controller_args``
    are added to the controller's command line (``--predictor vllm`` for real engines)."""
    from nexus.local import atomic_file, gitops, prometheus
    from nexus.local.resources import CONFIG_FOLDER
    from nexus.local.supervisor import Supervisor

    # The transformers' ConfigMaps come from the synced commit, as `nexus up` seeds them.
    gitops.seed(gitops_repo, REPO, [CONFIG_FOLDER])

    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed; run `make system-deps`")
    state = tmp_path / "platform"
    (state / "api-key").parent.mkdir(parents=True)
    (state / "api-key").write_text(API_KEY + "\n")
    atomic_file.write_text(state / "prometheus" / "prometheus.yml", prometheus.render([]))
    prom_port, status_port, base = free_port(), free_port(), free_port_range(30)
    prom_url = f"http://127.0.0.1:{prom_port}"
    controller = python_module(
        "nexus.local.controller", "--state-dir", str(state), "--project-dir", str(REPO),
        "--gitops-repo", str(gitops_repo), "--status-port", str(status_port),
        "--port-base", str(base), "--port-span", "30", "--api-key-file", str(state / "api-key"),
        "--prometheus-url", prom_url, "--interval", "0.5", *controller_args,
    )  # fmt: skip
    try:
        with (
            managed(prometheus.command(binary, state, prom_port), log=tmp_path / "prom.log",
                    ready_url=f"{prom_url}/-/ready"),
            managed(controller, log=tmp_path / "controller.log", timeout=start_timeout,
                    ready_url=f"http://127.0.0.1:{status_port}/healthz"),
        ):  # fmt: skip
            yield LocalPlatform(state, f"http://127.0.0.1:{status_port}", prom_url)
    finally:
        # The controller stops its revisions on SIGTERM; should it have been killed
        # instead, their pid files still name them.
        Supervisor(state).stop_all()


@pytest.fixture
def local_platform(tmp_path: Path, gitops_repo: Path) -> Iterator[LocalPlatform]:
    """The local control plane on the test's GitOps repository, and its Prometheus."""
    with local_platform_at(tmp_path, gitops_repo) as platform:
        yield platform


class FaultWhenUp:
    """Sets faults on a revision's worker as soon as it answers (a thread: the revision
    only exists once the pipeline under test has committed its canary)."""

    def __init__(self, platform: LocalPlatform, revision: str, **faults: float) -> None:
        self._platform, self._revision, self._faults = platform, revision, faults
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.done = False

    def _run(self) -> None:
        while not self._stop.is_set():
            url = self._platform.worker_url(self._revision)
            if url is not None:
                httpx.post(f"{url}/admin/faults", json=self._faults).raise_for_status()
                self.done = True
                return
            self._stop.wait(0.1)

    def __enter__(self) -> FaultWhenUp:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


def python() -> str:
    return sys.executable
