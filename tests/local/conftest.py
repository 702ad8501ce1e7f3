"""The real local controller on a test's own bare GitOps repository and project copy.

``controller`` starts ``python -m nexus.local.controller`` as ``nexus up`` does, on a bare
repository seeded with one InferenceService (``qwen-1-5b``: a CPU worker and our
transformer) and the ConfigMaps of ``platform/k8s/base``. The project directory is a copy
whose ``platform/k8s/base`` the test may edit: it plays the working checkout, which the
controller must not read. Tests change the platform only by pushing commits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.processes import (
    REPO,
    Managed,
    free_port,
    free_port_range,
    python_module,
    wait_http,
)

ISVC = "qwen-1-5b"
ISVC_PATH = f"inference_services/local/inferenceservice.{ISVC}.yaml"
CONFIG_PATH = "platform/k8s/base/gateway-config.configmap.yaml"
ISVC_API = "/apis/serving.kserve.io/v1beta1/namespaces/nexus/inferenceservices"
API_KEY = "controller-test-key"


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class LocalController:
    state: Path
    project: Path
    work: Path  # a clone of the GitOps repository the test commits and pushes from
    status_url: str
    command: list[str] = field(default_factory=list)
    process: Managed | None = None

    def start(self) -> None:
        """Start the controller (as `nexus up` does) and wait for its status API."""
        self.process = Managed(self.command, log=self.state.parent / "controller.log")
        try:
            wait_http(f"{self.status_url}/healthz", timeout=60, proc=self.process.proc)
        except BaseException:
            sys.stderr.write(self.process.output()[-4000:])
            raise

    def restart(self) -> None:
        """Stop the controller (SIGTERM: it stops its processes) and start it again."""
        assert self.process is not None
        self.process.stop()
        self.start()

    def read(self, path: str) -> dict[str, Any]:
        return dict(yaml.safe_load((self.work / path).read_text()))

    def push(
        self, path: str, body: dict[str, Any], message: str
    ) -> subprocess.CompletedProcess[str]:
        """Commit ``body`` at ``path`` and push it; the push's result, never raising."""
        (self.work / path).write_text(yaml.safe_dump(body, sort_keys=False))
        git("add", path, cwd=self.work)
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message,
            cwd=self.work)  # fmt: skip
        return subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=self.work,
                              capture_output=True, text=True, check=False)  # fmt: skip

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)

    def get(self, path: str) -> dict[str, Any]:
        response = httpx.get(self.status_url + path, timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def isvc(self) -> dict[str, Any]:
        return self.get(f"{ISVC_API}/{ISVC}")

    def application(self, name: str = "nexus-inference-services") -> dict[str, Any]:
        return self.get(f"/api/v1/applications/{name}")

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 90) -> None:
        """Poll ``check``; a 404 (the first sync has not run yet) counts as not yet."""

        def done() -> bool:
            try:
                return check()
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
                return False

        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not reached in {timeout}s; {self.isvc()['status']}")
            time.sleep(0.2)

    def ready_revision(self, number: str) -> None:
        """Until revision ``number`` (``00002``) takes all traffic and the ISVC is Ready."""

        def done() -> bool:
            status = self.isvc()["status"]
            traffic = status["components"]["predictor"]["traffic"]
            ready = any(
                c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"]
            )
            return ready and [t["revisionName"] for t in traffic] == [f"{ISVC}-predictor-{number}"]

        self.wait(done, f"revision {number} serving")

    def port(self, process: str) -> int:
        """The port the controller booked for ``process`` (its port book on disk)."""
        return int(json.loads((self.state / "ports.json").read_text())["ports"][process])

    def pid(self, process: str) -> int:
        return int((self.state / "run" / f"{process}.pid").read_text())

    def environ(self, process: str) -> dict[str, str]:
        """The environment the process was started with, as the kernel holds it."""
        raw = Path(f"/proc/{self.pid(process)}/environ").read_bytes()
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        return {k.decode(): v.decode() for k, v in pairs}


def project_copy(tmp: Path) -> Path:
    """A project directory the controller may be pointed at: manifests copied, code linked."""
    project = tmp / "checkout"
    for folder in ("inference_services/local", "graphs", "platform/k8s/base"):
        shutil.copytree(REPO / folder, project / folder)
    (project / "bento").symlink_to(REPO / "bento")
    shutil.copyfile(REPO / "platform" / "versions.yaml", project / "platform" / "versions.yaml")
    return project


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[LocalController]:
    from nexus.local import gitops
    from nexus.local.supervisor import Supervisor

    project = project_copy(tmp_path)
    seed = tmp_path / "seed"
    for path in (ISVC_PATH, CONFIG_PATH):
        (seed / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project / path, seed / path)
    repo = tmp_path / "gitops.git"
    gitops.seed(repo, seed, ["inference_services/local", "platform/k8s/base"])
    work = tmp_path / "work"
    git("clone", "-q", str(repo), str(work))
    state = tmp_path / "state"
    state.mkdir()
    (state / "api-key").write_text(API_KEY + "\n")
    status_port, base = free_port(), free_port_range(12)
    args = python_module(
        "nexus.local.controller", "--state-dir", str(state), "--project-dir", str(project),
        "--gitops-repo", str(repo), "--status-port", str(status_port),
        "--port-base", str(base), "--port-span", "12", "--api-key-file", str(state / "api-key"),
        "--interval", "0.3",
    )  # fmt: skip
    status_url = f"http://127.0.0.1:{status_port}"
    found = LocalController(state, project, work, status_url)
    found.command = args
    try:
        found.start()
        yield found
    finally:
        if found.process is not None:
            found.process.stop()
        Supervisor(state).stop_all()
