"""The controller's processes (the local platform's Pods): started, probed and stopped async.

Each process is launched detached through the ``Supervisor`` (pid file and log under the
state directory, so ``nexus down`` can stop it even if the controller is gone), then
probed without blocking the controller's event loop, the way kubelet runs readiness
probes. A process that exits is restarted as kubelet restarts a container under
``restartPolicy: Always``: at once the first time, then after a back-off that doubles
(kubelet: 10 s up to 5 min; here 1 s up to 60 s, since a worker starts in two seconds).
Until it is ready again its revision is not ready, and traffic falls back as in a
cluster. After ``CRASH_LOOP`` exits in a row (kubelet's ``CrashLoopBackOff``) the exit is
reported as a failure, which marks the InferenceService Degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import aiohttp

from nexus.errors import PlatformError
from nexus.local.supervisor import Service, Supervisor, signal_group, stop_groups

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2)
FIRST_BACKOFF = 1.0  # seconds before the second restart; doubles with every exit after
MAX_BACKOFF = 60.0
CRASH_LOOP = 3  # exits in a row that make a failure
STABLE_AFTER = 60.0  # a process that ran this long before exiting starts a new row
LOG_TAIL = 400  # characters of the log quoted in an exit message


@dataclass(slots=True)
class Workload:
    service: Service
    process: subprocess.Popen[bytes] | None
    ready: bool = False
    failure: str | None = None  # set once crash-looping: the revision is Degraded
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0
    exits: int = 0  # in a row, each within STABLE_AFTER of its start
    last_exit: str | None = None
    restart_at: float | None = None  # while no process runs

    def backoff(self) -> float:
        """Seconds before the next restart: none after the first exit, then 1, 2, 4 ..."""
        if self.exits <= 1:
            return 0.0
        return float(min(FIRST_BACKOFF * 2 ** (self.exits - 2), MAX_BACKOFF))


class Workloads:
    """Named processes; ``probe()`` refreshes readiness, ``stop()`` ends one."""

    def __init__(self, *, supervisor: Supervisor, session: aiohttp.ClientSession) -> None:
        self.supervisor = supervisor
        self.session = session
        self._items: dict[str, Workload] = {}

    def get(self, name: str) -> Workload | None:
        return self._items.get(name)

    def ensure(self, service: Service) -> Workload:
        """Start ``service`` unless a process of that name is known (running or restarting)."""
        current = self._items.get(service.name)
        if current is not None and current.service == service:
            return current
        if current is not None:
            raise PlatformError(f"{service.name} changed while running; stop it first")
        workload = Workload(service, None)
        self._items[service.name] = workload
        self._launch(workload)
        return workload

    def _launch(self, workload: Workload) -> None:
        workload.restart_at = None
        workload.started = time.monotonic()
        try:
            workload.process = self.supervisor.launch(workload.service)
        except PlatformError as exc:
            self._exited(workload, str(exc))

    def _exited(self, workload: Workload, why: str) -> None:
        now = time.monotonic()
        if now - workload.started >= STABLE_AFTER:
            workload.exits = 0
        workload.process = None
        workload.ready = False
        workload.exits += 1
        workload.last_exit = why
        delay = workload.backoff()
        workload.restart_at = now + delay
        if workload.exits >= CRASH_LOOP:
            workload.failure = (
                f"{why}; restarting in {delay:.0f} s (CrashLoopBackOff, "
                f"{workload.restarts} restarts)"
            )

    def _exit_message(self, name: str, code: int) -> str:
        log = self.supervisor.log_path(name)
        try:
            with log.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - LOG_TAIL))
                tail = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            tail = []
        last = f": {tail[-1].strip()}" if tail else ""
        return f"exited with code {code}{last} (log: {log})"

    async def probe(self) -> None:
        await asyncio.gather(*(self._probe(w) for w in self._items.values()))

    async def _probe(self, workload: Workload) -> None:
        if workload.process is None:
            if workload.restart_at is not None and time.monotonic() >= workload.restart_at:
                workload.restarts += 1
                self._launch(workload)
            return
        code = workload.process.poll()
        if code is not None:
            signal_group(workload.process.pid, signal.SIGKILL)  # what it forked goes with it
            self._exited(workload, self._exit_message(workload.service.name, code))
            return
        if workload.ready:
            return
        workload.ready = await self._answers(workload.service)
        if workload.ready:
            workload.failure = None

    async def _answers(self, service: Service) -> bool:
        """kubelet's httpGet probe with a ``ready_url``, else its tcpSocket probe (Redis)."""
        if service.ready_url is None:
            try:
                connecting = asyncio.open_connection("127.0.0.1", service.port)
                _, writer = await asyncio.wait_for(connecting, PROBE_TIMEOUT.total)
            except (OSError, TimeoutError):
                return False
            writer.close()
            await writer.wait_closed()
            return True
        try:
            async with self.session.get(service.ready_url, timeout=PROBE_TIMEOUT) as response:
                return response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def stop(self, name: str, *, grace: float | None = None) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds.

        ``grace`` defaults to the service's own ``stop_grace`` (a vLLM engine's is long).
        """
        workload = self._items.pop(name, None)
        pid_file = self.supervisor.run_dir / f"{name}.pid"
        if workload is None or workload.process is None:
            pid_file.unlink(missing_ok=True)
            return
        process = workload.process
        # Off the loop: the wait for exit blocks, and the controller keeps serving meanwhile.
        stop_grace = workload.service.stop_grace if grace is None else grace
        await asyncio.to_thread(stop_groups, [process.pid], grace=stop_grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.5)  # reaps it, if the wait above did not already
        # Only now: should the controller be killed during the grace (`nexus down` waits
        # less than a vLLM engine's), the pid file still names the group for whoever stops next.
        pid_file.unlink(missing_ok=True)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._items)))
