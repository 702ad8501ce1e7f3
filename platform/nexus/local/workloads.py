"""The controller's processes (the local platform's Pods): started, probed and stopped async.

Each process is launched detached through the ``Supervisor`` (pid file and log under the
state directory, so ``nexus down`` can stop it even if the controller is gone), then
probed without blocking the controller's event loop, the way kubelet runs readiness
probes. A process that exits is reported, not restarted: the failure shows in the
InferenceService's status (Degraded), which is what the fallback graph and the release
pipeline's rollback are there to handle.
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
from nexus.local.supervisor import Service, Supervisor

PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2)


@dataclass(slots=True)
class Workload:
    service: Service
    process: subprocess.Popen[bytes] | None
    ready: bool = False
    failure: str | None = None
    started: float = field(default_factory=time.monotonic)


class Workloads:
    """Named processes; ``probe()`` refreshes readiness, ``stop()`` ends one."""

    def __init__(self, *, supervisor: Supervisor, session: aiohttp.ClientSession) -> None:
        self.supervisor = supervisor
        self.session = session
        self._items: dict[str, Workload] = {}

    def names(self) -> list[str]:
        return list(self._items)

    def get(self, name: str) -> Workload | None:
        return self._items.get(name)

    def ensure(self, service: Service) -> Workload:
        """Start ``service`` unless a process of that name is known (alive or failed)."""
        current = self._items.get(service.name)
        if current is not None and current.service == service:
            return current
        if current is not None:
            raise PlatformError(f"{service.name} changed while running; stop it first")
        try:
            process = self.supervisor.launch(service)
        except PlatformError as exc:
            workload = Workload(service, None, failure=str(exc))
        else:
            workload = Workload(service, process)
        self._items[service.name] = workload
        return workload

    async def probe(self) -> None:
        await asyncio.gather(*(self._probe(w) for w in self._items.values()))

    async def _probe(self, workload: Workload) -> None:
        if workload.process is None or workload.failure is not None:
            return
        code = workload.process.poll()
        if code is not None:
            workload.ready = False
            log = self.supervisor.log_path(workload.service.name)
            workload.failure = f"exited with code {code} (log: {log})"
            return
        if workload.ready:
            return
        url = workload.service.ready_url or f"http://127.0.0.1:{workload.service.port}/"
        try:
            async with self.session.get(url, timeout=PROBE_TIMEOUT) as response:
                workload.ready = response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            workload.ready = False

    async def stop(self, name: str, *, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds."""
        workload = self._items.pop(name, None)
        (self.supervisor.run_dir / f"{name}.pid").unlink(missing_ok=True)
        if workload is None or workload.process is None:
            return
        process = workload.process
        _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        # Popen offers no awaitable exit; a short poll keeps the loop free meanwhile.
        while process.poll() is None and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        # Workers forked by the process share its group; none may survive it.
        _signal_group(process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(0.5)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(name) for name in list(self._items)))


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
