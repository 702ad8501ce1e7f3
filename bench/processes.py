"""Start the benchmark's servers on free loopback ports and always stop them again.

The benchmark must not leave a server behind when a cell fails or the user presses
Ctrl-C, so every child runs in its own process group (uvicorn workers included) and is
registered with an ``ExitStack`` the moment it exists. Kept separate from ``tests/``: the
benchmarks are a tool users run, and must not depend on the test suite's support code.
The one exception is the upstream it measures against, the CPU imitation of vLLM
(``tests/support/cpu_llm.py``, moved out of the platform in issue 10): it is run as a
separate process, never imported.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def installed(program: str) -> str:
    """Where ``program`` is, or exit saying what installs it (``scripts/system-deps.sh``)."""
    found = shutil.which(program)
    if found is None:
        raise SystemExit(f"{program} is not installed: `make system-deps` installs it")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """One server process; its output goes to a log file that is shown when it fails."""

    def __init__(
        self, name: str, args: Sequence[str], *, log_dir: Path, env: Mapping[str, str] | None
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=REPO,
            start_new_session=True,
        )

    def tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, url: str, *, timeout: float) -> None:
        """Poll ``url`` until it answers below 500; fail with the log if the child dies first."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready:\n"
                    + self.tail()
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310 - loopback
                    if reply.status < 500:
                        return
            except urllib.error.HTTPError as exc:
                exc.close()  # the error carries the open response
                if exc.code < 500:
                    return
                last = exc
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(
            f"{self.name} not ready at {url} after {timeout}s ({last}):\n{self.tail()}"
        )

    def wait_port(self, port: int, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: nothing listens on 127.0.0.1:{port} after {timeout}s")

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the group, SIGKILL what is left: workers share the group and must not linger."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout)
        self._signal_group(signal.SIGKILL)
        self._log.close()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in group ``pgid`` (workers included).

    CPU per request is the figure that stays meaningful when other work shares the
    machine: wall-clock latency and throughput then depend on who else gets the cores.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the parenthesised command: state ppid pgrp ... utime(12) stime(13).
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


class Children(contextlib.ExitStack):
    """Every child of one run; leaving the ``with`` block stops them all, in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__()
        self.log_dir = log_dir

    def start(
        self, name: str, args: Sequence[str], *, env: Mapping[str, str] | None = None
    ) -> Child:
        child = Child(name, args, log_dir=self.log_dir, env=env)
        self.callback(child.stop)
        return child


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so ``finally`` blocks stop the children then too."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
