"""The local platform's two small routines: stopping a process group, writing a file atomically."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from nexus.local.atomic_file import write_text
from nexus.local.supervisor import stop_groups


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _group(script: str, pid_file: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    deadline = time.monotonic() + 10
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the child never wrote its pid"
        time.sleep(0.02)
    return process


def test_a_leader_that_exits_on_sigterm_does_not_leave_its_workers(tmp_path: Path) -> None:
    # The worker ignores SIGTERM, as a busy worker may; the leader exits at once on it.
    child = tmp_path / "child.pid"
    leader = _group(f"bash -c 'trap \"\" TERM; echo $$ > {child}; sleep 60' & wait", child)
    worker = int(child.read_text())
    started = time.monotonic()
    stop_groups([leader.pid], grace=5.0)
    assert time.monotonic() - started < 4.0  # the leader's exit ended the grace period
    time.sleep(0.1)
    assert leader.poll() is not None
    assert not _alive(worker) or Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z"


def test_a_leader_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    pid_file = tmp_path / "leader.pid"
    leader = _group(f"trap '' TERM; echo $$ > {pid_file}; sleep 60 & wait", pid_file)
    started = time.monotonic()
    stop_groups([leader.pid], grace=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 5.0  # it waited the grace, then SIGKILL ended it
    assert not _alive(leader.pid)  # reaped too: stop_groups waits for the exit it caused
    leader.wait(1)  # the status was taken by that reaping; Popen only needs to learn it


def test_an_unchanged_file_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    assert write_text(path, "one\n") is True
    before = path.stat().st_mtime_ns
    time.sleep(0.01)
    assert write_text(path, "one\n") is False
    assert path.stat().st_mtime_ns == before
    assert write_text(path, "two\n") is True
    assert path.read_text() == "two\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]  # no temp left
