"""The controller's processes restart as kubelet restarts containers: real processes, real ports."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from nexus.local.supervisor import Service, Supervisor
from nexus.local.workloads import CRASH_LOOP, Workload, Workloads
from tests.support.processes import free_port

# Serves HTTP once the flag file exists; before that, says why and exits 1.
SERVE_WHEN_FLAGGED = """
import http.server, pathlib, sys
flag, port = pathlib.Path(sys.argv[1]), int(sys.argv[2])
if not flag.exists():
    print("boom: the flag file is missing", flush=True)
    sys.exit(1)
http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


@pytest.fixture
async def workloads(tmp_path: Path) -> AsyncIterator[Workloads]:
    async with aiohttp.ClientSession() as session:
        found = Workloads(supervisor=Supervisor(tmp_path / "state"), session=session)
        try:
            yield found
        finally:
            await found.stop_all()


def service(tmp_path: Path, name: str = "worker") -> tuple[Service, Path]:
    flag, port = tmp_path / "flag", free_port()
    args = [sys.executable, "-c", SERVE_WHEN_FLAGGED, str(flag), str(port)]
    return Service(name, args, port, f"http://127.0.0.1:{port}/"), flag


async def probe_until(workloads: Workloads, done: Callable[[], bool]) -> None:
    """Probe as the controller does until ``done``; 20 s is far beyond any restart here."""
    async with asyncio.timeout(20):
        while not done():
            await workloads.probe()
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(("exits", "seconds"), [(1, 0), (2, 1), (3, 2), (4, 4), (12, 60)])
def test_restart_backoff_is_immediate_then_doubles_up_to_a_minute(
    exits: int, seconds: float
) -> None:
    workload = Workload(Service("w", ["true"], 1), None, exits=exits)
    assert workload.backoff() == seconds


async def test_a_killed_process_is_restarted_and_serves_again(
    workloads: Workloads, tmp_path: Path
) -> None:
    svc, flag = service(tmp_path)
    flag.touch()
    workload = workloads.ensure(svc)
    await probe_until(workloads, lambda: workload.ready)
    assert workload.process is not None
    first = workload.process.pid

    os.kill(first, signal.SIGKILL)
    await probe_until(workloads, lambda: not workload.ready)
    assert workload.last_exit is not None
    assert workload.last_exit.startswith("exited with code -9")
    await probe_until(workloads, lambda: workload.ready)

    assert workload.process is not None
    assert workload.process.pid != first
    assert workload.restarts == 1
    assert workload.failure is None, "one exit is a restart, not a failure"
    pid_file = tmp_path / "state" / "run" / "worker.pid"
    assert int(pid_file.read_text()) == workload.process.pid


async def test_a_process_that_keeps_exiting_fails_with_its_last_log_line_then_recovers(
    workloads: Workloads, tmp_path: Path
) -> None:
    svc, flag = service(tmp_path)
    workload = workloads.ensure(svc)
    await probe_until(workloads, lambda: workload.failure is not None)

    assert workload.exits == CRASH_LOOP
    assert workload.restarts == CRASH_LOOP - 1
    assert workload.failure is not None
    assert "exited with code 1: boom: the flag file is missing" in workload.failure
    assert "CrashLoopBackOff" in workload.failure
    assert workload.restart_at is not None
    assert workload.restart_at - time.monotonic() == pytest.approx(2.0, abs=0.5)

    flag.touch()  # the cause goes away: the next restart serves, and the failure clears
    await probe_until(workloads, lambda: workload.ready)
    assert workload.failure is None
    assert workload.restarts == CRASH_LOOP


async def test_a_stopped_workload_is_not_restarted(workloads: Workloads, tmp_path: Path) -> None:
    svc, flag = service(tmp_path)
    flag.touch()
    workload = workloads.ensure(svc)
    await probe_until(workloads, lambda: workload.ready)
    assert workload.process is not None
    process = workload.process

    await workloads.stop(svc.name)
    await workloads.probe()
    assert process.poll() is not None
    assert workloads.get(svc.name) is None


# Ignores SIGTERM, as a vLLM engine busy shutting down does for up to its grace.
DEAF_TO_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("up", flush=True)
time.sleep(600)
"""


def ignores_sigterm(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


async def test_a_stop_cut_short_leaves_the_pid_file_for_the_next_stopper(
    workloads: Workloads, tmp_path: Path
) -> None:
    """The controller killed during a long stop grace (``nexus down`` waits 10 s, an engine's
    grace is 60 s) must not orphan the process: its pid file stays until it is gone, so
    ``Supervisor.stop_all`` still finds it."""
    svc = Service("deaf", [sys.executable, "-c", DEAF_TO_SIGTERM], free_port())
    workload = workloads.ensure(svc)
    process = workload.process
    assert process is not None
    pid = process.pid
    supervisor = Supervisor(tmp_path / "state")
    assert supervisor.pid_of("deaf") == pid
    for _ in range(400):  # until its handler is set (SIGTERM in SigIgn), 20 s at most
        if ignores_sigterm(pid):
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the process never ignored SIGTERM")

    stopping = asyncio.create_task(workloads.stop("deaf", grace=30))
    await asyncio.sleep(1.0)  # SIGTERM sent and ignored: the stop is waiting out its grace
    stopping.cancel()  # the stopper dies here (the thread's wait goes on, unobserved)
    assert supervisor.pid_of("deaf") == pid
    assert supervisor.stop_all(timeout=2) == ["deaf"]
    process.wait(5)  # reaped here, or by the thread of the stop that was cut short
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert supervisor.running() == []
