"""Start real processes on free loopback ports, wait until they answer, always stop them."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_range(span: int) -> int:
    """The first of ``span`` consecutive loopback ports, all free now, below the ephemeral range.

    A local platform books its range at start and binds ports from it for minutes. Inside
    the kernel's ephemeral range an outgoing connection can take one of those ports
    meanwhile, and the process that binds it later fails to start. Below that range, only
    listeners compete. The base is random, so two runs on one machine rarely meet.
    """
    low = _ephemeral_low()
    for _ in range(100):
        base = random.randrange(10_000, low - span)
        if all(_bindable(port) for port in range(base, base + span)):
            return base
    raise RuntimeError(f"no {span} consecutive free ports between 10000 and {low}")


def _ephemeral_low() -> int:
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    return max(low, 12_000)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_http(
    url: str, *, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll ``url`` until it answers with any HTTP status below 500."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            exc.close()  # the error carries the open response; unclosed, its socket leaks
            if exc.code < 500:
                return
            last = exc
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last}")


def wait_port(port: int, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Managed:
    """A child process whose output goes to a log file shown when a test fails."""

    def __init__(self, args: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None):
        self.args = list(args)
        self.log_path = log
        self._log = log.open("wb")
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            self.args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=REPO,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def output_with(self, count: int, marker: str, timeout: float = 5.0) -> str:
        """The output once it holds ``count`` lines containing ``marker`` (or at the timeout).

        A server writes its access line after the answer has gone out, so a test that
        reads the log as soon as it has its answer can be a line early.
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.output()
            if sum(marker in line for line in text.splitlines()) >= count:
                return text
            if time.monotonic() > deadline:
                return text
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (workers included) with ``sig``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(timeout)
        # Workers of a multi-process server share the group; make sure none survive.
        self.kill(signal.SIGKILL)
        self._log.close()


@contextlib.contextmanager
def managed(
    args: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    ready_url: str | None = None,
    ready_port: int | None = None,
    timeout: float = 60.0,
) -> Iterator[Managed]:
    """Run ``args`` until the block ends; fail with the process log if it never gets ready."""
    process = Managed(args, log=log, env=env)
    try:
        if ready_url:
            wait_http(ready_url, timeout=timeout, proc=process.proc)
        if ready_port:
            wait_port(ready_port, timeout=timeout)
        yield process
    except BaseException:
        sys.stderr.write(f"--- log of {' '.join(args[:4])} ---\n{process.output()[-4000:]}\n")
        raise
    finally:
        process.stop()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
