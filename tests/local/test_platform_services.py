"""MLflow, Redis and Prometheus under a running `nexus up`: SIGKILLed, they come back.

One real platform (CPU workers) on free ports, which holds at most 1.5 GiB (PSS of all
its processes, as ``scripts/footprint.py`` measures). The three services are killed at once;
the status API (``nexus-system`` Pods) and ``nexus status`` show each one not ready while
the controller restarts it, then each runs again under a new pid with one restart, and
the platform serves a request through Redis' limiter and MLflow's registry answers. A
`nexus release` against an MLflow that does not answer ends with one line naming its URL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from scripts.footprint import MIB, measure

from tests.support.local_platform import alive, nexus, pids
from tests.support.processes import free_port, free_port_range

SERVICES = ("mlflow", "redis", "prometheus")
LIMIT_MIB = 1536  # issue 23: `nexus up` (CPU workers) holds at most 1.5 GiB
PODS = "/api/v1/namespaces/nexus-system/pods"
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state = tmp_path_factory.mktemp("services") / "state"
    result = nexus("up", "--port-base", str(free_port_range(60)), state=state)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield state
    finally:
        nexus("down", state=state)


def containers(status_url: str) -> dict[str, dict[str, Any]]:
    items = httpx.get(status_url + PODS, timeout=5).json()["items"]
    return {pod["metadata"]["name"]: pod["status"]["containerStatuses"][0] for pod in items}


def test_the_platform_holds_at_most_one_and_a_half_gib(state: Path) -> None:
    """PSS, which divides shared pages among their processes, so the sum is what they hold."""
    processes = measure(state)
    assert {p.service for p in processes} >= {*SERVICES, "controller"}
    total = sum(p.pss for p in processes) / MIB
    assert total <= LIMIT_MIB, [(p.service, p.pss // MIB) for p in processes]


def test_killed_services_come_back_and_status_shows_them_meanwhile(state: Path) -> None:
    endpoints = json.loads((state / "endpoints.json").read_text())
    status_url = endpoints["status_url"]
    before = containers(status_url)
    assert {name: (c["ready"], c["restartCount"]) for name, c in before.items()} == dict.fromkeys(
        SERVICES, (True, 0)
    )
    table = nexus("status", state=state, timeout=60).stdout
    assert all(re.search(rf"{name} +True +Running +0 ", table) for name in SERVICES), table

    old = {name: pids(state)[name] for name in SERVICES}
    for pid in old.values():
        os.kill(pid, signal.SIGKILL)
    seen: dict[str, set[str]] = {name: set() for name in SERVICES}
    shown = ""
    deadline = time.monotonic() + 180
    while True:
        now = containers(status_url)
        for name, container in now.items():
            if not container["ready"]:
                waiting = container["state"].get("waiting", {}).get("reason", "Starting")
                seen[name].add(waiting)
                if not shown and name == "mlflow":
                    shown = nexus("status", state=state, timeout=60).stdout
        back = all(c["ready"] and c["restartCount"] == 1 for c in now.values())
        if back and all(seen.values()):
            break
        assert time.monotonic() < deadline, f"not back in 180 s: {now}; seen {seen}"
        time.sleep(0.1)

    # Each was seen not ready, restarting or starting, while it was down.
    assert all(states <= {"Restarting", "Starting"} for states in seen.values()), seen
    assert re.search(r"mlflow +False +(Restarting|Starting) ", shown), shown
    new = pids(state)
    assert all(new[name] != old[name] and alive(new[name]) for name in SERVICES)
    # Back in service: MLflow's registry answers, a request passes Redis' limiter.
    assert httpx.get(endpoints["tracking_uri"] + "/health", timeout=5).status_code == 200
    front = endpoints["inference_services"]["llama-8b"]
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {endpoints['api_key']}"}
    reply = httpx.post(front + "/openai/v1/chat/completions", json=body, headers=headers,
                       timeout=30)  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert "x-ratelimit-remaining-requests" in reply.headers
    # The transformer keeps its limiter state in the restarted Redis.
    client = redis.Redis.from_url(endpoints["redis_url"])
    try:
        assert client.dbsize() > 0
    finally:
        client.close()


def test_a_release_against_a_dead_registry_is_one_clear_line(state: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = nexus("release", "llama-8b", "--version", "1", "--tracking-uri", dead, "--inline",
                   state=state, timeout=120)  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nexus release: the MLflow registry at {dead} is unreachable"), last
    assert "nexus up" in last
    for noise in ("HTTPConnectionPool", "Retrying", "Traceback"):
        assert noise not in result.stdout + result.stderr
