"""`nexus up` / `status` / `down` as a person runs them: real processes, Git, MLflow, ports.

One platform is shared by the module (starting ~15 processes on a small machine takes a
while); the tests run in file order and each leaves the platform as the next expects:
healthy, then canaried/promoted/rolled back, then with its primary worker killed and
restarted, then stopped and started again.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import yaml

from tests.support.local_platform import alive, nexus, pids
from tests.support.processes import free_port_range
from tests.support.traffic import Traffic

LLAMA = "inference_services/local/inferenceservice.llama-8b.yaml"
ISVC_API = "/apis/serving.kserve.io/v1beta1/namespaces/nexus/inferenceservices"
CHAT_PATH = "/openai/v1/chat/completions"
pytestmark = pytest.mark.timeout(900)


class Platform:
    def __init__(self, state: Path, started: subprocess.CompletedProcess[str]) -> None:
        self.state = state
        self.stdout = started.stdout
        self.endpoints: dict[str, Any] = json.loads((state / "endpoints.json").read_text())
        self.key = str(self.endpoints["api_key"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def isvc(self, name: str) -> dict[str, Any]:
        response = httpx.get(f"{self.endpoints['status_url']}{ISVC_API}/{name}")
        response.raise_for_status()
        return dict(response.json())

    def wait_isvc(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 120
    ) -> dict[str, Any]:
        """Poll the status API (real processes start on their own clock) until ``check``."""
        deadline = time.monotonic() + timeout
        while True:
            obj = self.isvc(name)
            if check(obj):
                return obj
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} never reached the expected state: {obj['status']}")
            time.sleep(0.25)

    def chat(self, graph: str) -> httpx.Response:
        body = {
            "model": "chat",
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 4,
        }
        return httpx.post(self.endpoints["graphs"][graph] + CHAT_PATH, json=body,
                          headers=self.headers, timeout=30)  # fmt: skip


def traffic(obj: dict[str, Any]) -> dict[str, int]:
    predictor = obj["status"]["components"]["predictor"]
    return {t["revisionName"].rsplit("-", 1)[1]: t["percent"] for t in predictor["traffic"]}


def ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"]["conditions"])


def push(
    platform: Platform, tmp: Path, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    """Clone the GitOps repo, edit llama-8b, commit, push: what the release pipeline does."""
    work = tmp / f"clone-{time.monotonic_ns()}"
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run([*git, "clone", "-q", platform.endpoints["gitops_repo"], str(work)], check=True)
    path = work / LLAMA
    doc = yaml.safe_load(path.read_text())
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    subprocess.run([*git, "commit", "-qam", message], cwd=work, check=True)
    subprocess.run([*git, "push", "-q", "origin", "HEAD:main"], cwd=work, check=True)


def set_storage(uri: str, canary: int | None) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        predictor = doc["spec"]["predictor"]
        predictor["containers"][0]["env"][0] = {"name": "STORAGE_URI", "value": uri}
        if canary is None:
            predictor.pop("canaryTrafficPercent", None)
        else:
            predictor["canaryTrafficPercent"] = canary

    return change


def set_canary(canary: int | None) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        if canary is None:
            doc["spec"]["predictor"].pop("canaryTrafficPercent", None)
        else:
            doc["spec"]["predictor"]["canaryTrafficPercent"] = canary

    return change


async def count_revisions(url: str, headers: dict[str, str], n: int) -> Counter[str]:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    seen: Counter[str] = Counter()
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            async with limit, session.post(url + CHAT_PATH, json=body, headers=headers) as response:
                assert response.status == 200, await response.text()
                seen[response.headers["x-nexus-revision"].rsplit("-", 1)[1]] += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return seen


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    state = tmp_path_factory.mktemp("nexus") / "state"
    started = time.monotonic()
    result = nexus("up", "--port-base", str(free_port_range(60)), state=state)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        sys.stderr.write(f"nexus up took {time.monotonic() - started:.1f}s\n")
        yield Platform(state, result)
    finally:
        running = pids(state)
        nexus("down", state=state)
        assert not [n for n, pid in running.items() if alive(pid)], "down left processes"


def test_up_serves_a_chat_completion_through_the_fallback_graph(platform: Platform) -> None:
    endpoints = platform.endpoints
    assert set(endpoints["graphs"]) == {"chat-fallback", "chat-split", "chat-split-fallback"}
    assert set(endpoints["inference_services"]) == {"llama-8b", "mistral-7b", "qwen-1-5b"}
    for key in ("tracking_uri", "gitops_repo", "prometheus_url", "status_url"):
        assert key in endpoints
    assert platform.key in platform.stdout
    assert "curl" in platform.stdout
    assert endpoints["graphs"]["chat-fallback"] in platform.stdout
    response = platform.chat("chat-fallback")
    assert response.status_code == 200, response.text
    assert response.headers["x-nexus-graph-step"] == "llama-8b"
    assert response.json()["choices"][0]["message"]["content"]
    assert platform.chat("chat-split").status_code == 200
    assert httpx.get(endpoints["tracking_uri"] + "/health").status_code == 200


def test_status_shows_kserve_shapes_and_argo_applications(platform: Platform) -> None:
    shown = nexus("status", state=platform.state, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "nexus/llama-8b" in shown.stdout
    assert "00001:100%" in shown.stdout
    raw = json.loads(nexus("status", "--json", state=platform.state, timeout=30).stdout)
    llama = next(i for i in raw["inference_services"] if i["metadata"]["name"] == "llama-8b")
    assert ready(llama)
    assert llama["status"]["components"]["predictor"]["latestRolledoutRevision"] == (
        "llama-8b-predictor-00001"
    )
    apps = {a["metadata"]["name"]: a["status"] for a in raw["applications"]}
    assert apps["nexus-inference-services"]["sync"]["status"] == "Synced"
    assert apps["nexus-graphs"]["health"]["status"] == "Healthy"
    assert all(ready(g) for g in raw["graphs"])


def test_canary_split_promote_and_rollback_through_git(platform: Platform, tmp_path: Path) -> None:
    push(platform, tmp_path, set_storage("hf://meta-llama/Llama-3.2-8B-Instruct", 20), "canary")
    obj = platform.wait_isvc(
        "llama-8b", lambda o: traffic(o) == {"00002": 20, "00001": 80} and ready(o)
    )
    predictor = obj["status"]["components"]["predictor"]
    assert predictor["latestCreatedRevision"] == "llama-8b-predictor-00002"
    assert predictor["latestRolledoutRevision"] == "llama-8b-predictor-00001"
    assert {t["tag"] for t in predictor["traffic"]} == {"latest", "prev"}
    front = platform.endpoints["inference_services"]["llama-8b"]
    seen = asyncio.run(count_revisions(front, platform.headers, 200))
    assert sum(seen.values()) == 200
    # Binomial(200, 0.2): mean 40, sd 5.7; the bounds are beyond 4 sd.
    assert 17 <= seen["00002"] <= 63, seen

    old = pids(platform.state)["llama-8b-predictor-00001"]
    with Traffic(front + CHAT_PATH, headers=platform.headers) as during:
        push(platform, tmp_path, set_canary(None), "promote")
        obj = platform.wait_isvc("llama-8b", lambda o: traffic(o) == {"00002": 100} and ready(o))
        predictor = obj["status"]["components"]["predictor"]
        assert predictor["latestRolledoutRevision"] == "llama-8b-predictor-00002"
        assert predictor["previousRolledoutRevision"] == "llama-8b-predictor-00001"
        time.sleep(5)  # half the drain: stopping at once ends in about 2 s
        assert alive(old), "a revision out of traffic drains before it is stopped"
        deadline = time.monotonic() + 30  # a drain of 10 s, then SIGTERM
        while alive(old) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not alive(old), "the previous revision's worker must be stopped after promotion"
    # Zero downtime: requests sent to the old revision just before the switch still finish.
    assert set(during.statuses) == {200}, during.statuses
    assert during.statuses[200] >= 10, "traffic flowed through the switch and the drain"
    assert "llama-8b-predictor-00001" not in pids(platform.state)
    assert set(asyncio.run(count_revisions(front, platform.headers, 20))) == {"00002"}

    push(platform, tmp_path, set_storage("hf://meta-llama/Llama-3.3-8B-Instruct", 20), "canary 3")
    platform.wait_isvc("llama-8b", lambda o: traffic(o) == {"00003": 20, "00002": 80} and ready(o))
    failed = pids(platform.state)["llama-8b-predictor-00003"]
    push(platform, tmp_path, set_canary(0), "roll back")
    obj = platform.wait_isvc(
        "llama-8b", lambda o: traffic(o) == {"00003": 0, "00002": 100} and ready(o)
    )
    assert obj["status"]["components"]["predictor"]["latestRolledoutRevision"] == (
        "llama-8b-predictor-00002"
    )
    deadline = time.monotonic() + 30
    while alive(failed) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(failed), "a rolled-back revision's worker must be stopped"
    assert set(asyncio.run(count_revisions(front, platform.headers, 20))) == {"00002"}
    app = httpx.get(
        platform.endpoints["status_url"] + "/api/v1/applications/nexus-inference-services"
    )
    assert app.json()["status"]["sync"]["status"] == "Synced"


def test_killing_the_primary_worker_makes_the_fallback_graph_answer_until_it_restarts(
    platform: Platform,
) -> None:
    rolled_out = platform.isvc("llama-8b")["status"]["components"]["predictor"]
    revision = rolled_out["latestRolledoutRevision"]
    worker = pids(platform.state)[revision]
    os.kill(worker, 9)
    response = platform.chat("chat-fallback")
    assert response.status_code == 200, response.text
    assert response.headers["x-nexus-graph-step"] == "qwen-1-5b"
    assert response.json()["model"] == "qwen-1-5b"

    # As kubelet restarts a container: a new process for the same revision, serving again.
    deadline = time.monotonic() + 60
    while pids(platform.state).get(revision) in (None, worker):
        assert time.monotonic() < deadline, "the killed worker was never restarted"
        time.sleep(0.1)
    platform.wait_isvc("llama-8b", ready, timeout=60)
    assert platform.chat("chat-fallback").headers["x-nexus-graph-step"] == "llama-8b"
    assert alive(pids(platform.state)[revision])


def test_down_stops_everything_and_a_second_up_keeps_registry_and_history(
    platform: Platform,
) -> None:
    tracking = platform.endpoints["tracking_uri"]
    created = httpx.post(tracking + "/api/2.0/mlflow/experiments/create", json={"name": "kept"})
    assert created.status_code == 200, created.text
    repo = platform.endpoints["gitops_repo"]
    history = subprocess.run(["git", "--git-dir", repo, "log", "--oneline"], capture_output=True,
                             text=True, check=True).stdout  # fmt: skip
    running = pids(platform.state)
    stopped = nexus("down", state=platform.state, timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not [n for n, pid in running.items() if alive(pid)]
    assert nexus("status", state=platform.state, timeout=30).returncode == 3

    again = nexus("up", state=platform.state)
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads((platform.state / "endpoints.json").read_text()) == platform.endpoints
    found = httpx.get(tracking + "/api/2.0/mlflow/experiments/get-by-name",
                      params={"experiment_name": "kept"})  # fmt: skip
    assert found.status_code == 200, "the MLflow database must survive down/up"
    assert subprocess.run(["git", "--git-dir", repo, "log", "--oneline"], capture_output=True,
                          text=True, check=True).stdout == history  # fmt: skip
    predictor = platform.isvc("llama-8b")["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == "llama-8b-predictor-00002"
    assert platform.chat("chat-fallback").headers["x-nexus-graph-step"] == "llama-8b"


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = nexus("up", "--port-base", str(free_port_range(60)), "--mlflow-port", str(port),
                       state=tmp_path, timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert f"port {port} for mlflow is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert nexus("status", state=tmp_path, timeout=30).returncode == 3
    assert not pids(tmp_path), "a failed up must leave nothing running"
