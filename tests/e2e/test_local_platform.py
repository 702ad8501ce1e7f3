"""`nexus up` / `status` / `down` as a person runs them, with real processes and ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.processes import free_port

NEXUS = [sys.executable, "-m", "nexus.cli"]


def nexus(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*NEXUS, *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def ports() -> list[str]:
    return ["--port", str(free_port()), "--predictor-port", str(free_port()),
            "--redis-port", str(free_port())]  # fmt: skip


def test_up_serves_a_chat_completion_and_down_leaves_nothing(
    tmp_path: Path, ports: list[str]
) -> None:
    state = tmp_path / "state"
    started = nexus("up", *ports, state=state)
    try:
        assert started.returncode == 0, started.stderr
        assert "Nexus is up" in started.stdout
        key = (state / "demo-api-key").read_text().strip()
        assert key in started.stdout
        url = f"http://127.0.0.1:{ports[1]}/v1/chat/completions"
        body = {"model": "chat", "messages": [{"role": "user", "content": "Hello"}]}
        response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"]
        status = nexus("status", state=state)
        assert status.returncode == 0
        pids = [int(line.split("pid")[1]) for line in status.stdout.splitlines()]
        assert len(pids) == 3  # redis, predictor, transformer
    finally:
        stopped = nexus("down", state=state)
    assert stopped.returncode == 0
    assert not [pid for pid in pids if alive(pid)]
    assert nexus("status", state=state).returncode == 3
    again = nexus("up", *ports, state=state)
    try:
        assert again.returncode == 0, again.stderr
        assert (state / "demo-api-key").read_text().strip() == key, "the demo key must survive"
    finally:
        nexus("down", state=state)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path, ports: list[str]) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(ports[1])))
        blocker.listen()
        result = nexus("up", *ports, state=tmp_path)
    assert result.returncode == 1
    assert f"port {ports[1]} for transformer-chat is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert nexus("status", state=tmp_path).returncode == 3, "a failed up must stop what it started"
