"""Headless Chromium, once per call: a page's DOM after its scripts ran, or a screenshot."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--window-size=1400,900", "--virtual-time-budget=10000")  # fmt: skip


def chromium(url: str, *flags: str, profile: Path, timeout: float = 90) -> str:
    """Run headless Chromium once; its stdout. The whole process group goes afterwards."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    user_data = profile / f"chromium-profile-{time.monotonic_ns()}"  # fresh: no state carried
    user_data.mkdir(parents=True)
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *flags, url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if process.stdout is not None:  # left open when communicate() timed out
            process.stdout.close()
    return out
