"""Drive the `nexus` CLI as a person does, and look at the processes it leaves behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

NEXUS = [sys.executable, "-m", "nexus.cli"]


def nexus(*args: str, state: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    """``nexus <args> --state-dir <state>``, its output captured, never raising on failure."""
    return subprocess.run(
        [*NEXUS, *args, "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids(state: Path) -> dict[str, int]:
    """Process name -> pid, from the pid files the supervisor writes under ``<state>/run``."""
    return {p.stem: int(p.read_text()) for p in (state / "run").glob("*.pid")}
