"""Detached processes under a state directory: start, wait until ready, stop, report.

Every process gets ``<state>/run/<name>.pid`` and ``<state>/logs/<name>.log`` and runs in
its own session, so ``nexus down`` can stop it (and any workers it forked) after the
command that started it has exited.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nexus.errors import PlatformError
from nexus.local import atomic_file


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    args: Sequence[str]
    port: int
    ready_url: str | None = None
    env: Mapping[str, str] | None = None
    stop_grace: float = 10.0  # seconds from SIGTERM to SIGKILL (vLLM needs ~30 s)


def save_services(path: Path, services: Sequence[Service]) -> None:
    """The services file ``nexus up`` hands the controller (``--services-file``)."""
    data = [
        {"name": s.name, "args": list(s.args), "port": s.port, "ready_url": s.ready_url,
         "env": dict(s.env or {})}
        for s in services
    ]  # fmt: skip
    atomic_file.write_text(path, json.dumps(data, indent=2) + "\n")


def load_services(path: Path) -> list[Service]:
    data = json.loads(path.read_text())
    return [
        Service(d["name"], tuple(d["args"]), int(d["port"]), d["ready_url"], d["env"] or None)
        for d in data
    ]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections of a stopped server lingering in TIME_WAIT are no
        # obstacle, a live listener is.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class Supervisor:
    """Starts and stops the platform's processes, remembering them on disk."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.run_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"

    def pid_of(self, name: str) -> int | None:
        """The pid of a running service, or ``None`` (stale pid files are removed)."""
        path = self.run_dir / f"{name}.pid"
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
            return None
        except PermissionError:
            return pid
        return pid

    def running(self) -> list[str]:
        if not self.run_dir.exists():
            return []
        names = sorted(p.stem for p in self.run_dir.glob("*.pid"))
        return [n for n in names if self.pid_of(n) is not None]

    def launch(self, service: Service) -> subprocess.Popen[bytes]:
        """Start ``service`` detached without waiting for it (callers poll readiness)."""
        if self.pid_of(service.name) is not None:
            raise PlatformError(f"{service.name} is already running; `nexus down` stops it")
        if port_in_use(service.port):
            raise PlatformError(
                f"port {service.port} for {service.name} is already in use by another program; "
                "stop it or choose another port (see `nexus up --help`)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path(service.name).open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own argv, never user input
                list(service.args),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(service.env or {})},
                start_new_session=True,
            )
        (self.run_dir / f"{service.name}.pid").write_text(str(process.pid))
        return process

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def wait_ready(
        self, service: Service, process: subprocess.Popen[bytes], *, timeout: float = 60.0
    ) -> None:
        """Block until ``service`` answers; on exit or timeout stop it and raise."""
        self._wait_ready(service, process, self.log_path(service.name), timeout)

    def _wait_ready(
        self, service: Service, process: subprocess.Popen[bytes], log: Path, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-1500:]
                self.stop(service.name)
                raise PlatformError(f"{service.name} exited during start-up; its log ends:\n{tail}")
            if self.ready(service):
                return
            time.sleep(0.1)
        self.stop(service.name)
        raise PlatformError(f"{service.name} was not ready after {timeout:.0f}s; see {log}")

    @staticmethod
    def ready(service: Service) -> bool:
        if service.ready_url is None:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", service.port), timeout=0.5),
            ):
                return True
            return False
        try:
            with urllib.request.urlopen(service.ready_url, timeout=2) as response:  # noqa: S310
                return bool(response.status < 500)
        except urllib.error.HTTPError as exc:
            exc.close()  # the error carries the open response; unclosed, its socket leaks
            return exc.code < 500
        except OSError:
            return False

    def stop(self, name: str, *, timeout: float = 10.0) -> bool:
        pid = self.pid_of(name)
        if pid is not None:
            stop_groups([pid], grace=timeout)
        # After the stop, not before: a stopper killed meanwhile leaves the pid file behind.
        (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        return pid is not None

    def stop_all(self, *, timeout: float = 10.0) -> list[str]:
        """Stop the controller first (it would replace what disappears), then the rest at once."""
        names = sorted(self.running(), key=_stop_rank)
        stopped = [n for n in names if n == "controller" and self.stop(n, timeout=timeout)]
        pids = {n: pid for n in names if n != "controller" and (pid := self.pid_of(n))}
        stop_groups(pids.values(), grace=timeout)
        for name in pids:
            (self.run_dir / f"{name}.pid").unlink(missing_ok=True)
        return stopped + list(pids)


def _stop_rank(name: str) -> tuple[int, str]:
    order = ("controller", "router-", "transformer")
    for rank, prefix in enumerate(order):
        if name.startswith(prefix) or f"-{prefix}" in name:
            return rank, name
    return len(order), name


def signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by ``pid`` (every process runs in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_groups(pids: Iterable[int], *, grace: float) -> None:
    """The one way a process is stopped: SIGTERM, wait up to ``grace`` s, then SIGKILL.

    Each pid leads a process group; the SIGKILL goes to the whole group even when the
    leader exited in time, because workers it forked (uvicorn's, BentoML's) share the
    group and must not outlive it. Blocking: an event loop calls it through a thread.
    """
    leaders = list(pids)
    for pid in leaders:
        signal_group(pid, signal.SIGTERM)
    _wait_gone(leaders, grace)
    for pid in leaders:
        signal_group(pid, signal.SIGKILL)
    # SIGKILL is delivered, not awaited: return once the leaders are gone, so that whoever
    # runs next (a second `up`, a restart on the same port, a test's check) finds none.
    _wait_gone(leaders, 5.0)


def _wait_gone(pids: Sequence[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    return True


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
