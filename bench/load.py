"""Drive one benchmark cell with ``wrk`` and read its figures back as JSON.

wrk's text report rounds latencies to two digits in mixed units; a Lua ``done`` hook
prints the exact microsecond percentiles instead, so added latencies of a few hundred
microseconds are not lost to rounding.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.processes import installed

MARKER = "BENCH-JSON "

LUA_TEMPLATE = """\
wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {api_key}"
{extra_headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,'
    .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,'
    .. '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True, slots=True)
class Cell:
    """What one wrk run measured; latencies are ``None`` when no request completed."""

    connections: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    cpu_seconds: float | None = None  # of the server measured, when known

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_seconds is None or not self.requests:
            return None
        return self.cpu_seconds / self.requests * 1e6


def wrk_path() -> str:
    return installed("wrk")


def wrk_version() -> str:
    out = subprocess.run([wrk_path(), "-v"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).splitlines()[0].strip()


def write_script(
    path: Path, *, body: bytes, api_key: str, headers: Mapping[str, str] | None = None
) -> Path:
    """The Lua script that POSTs ``body`` with the credentials every target accepts."""
    text = body.decode()
    if "]==]" in text:
        raise ValueError("request body cannot contain the Lua long-string terminator ]==]")
    extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in (headers or {}).items())
    path.write_text(
        LUA_TEMPLATE.format(body=text, api_key=api_key, marker=MARKER, extra_headers=extra)
    )
    return path


def run(url: str, *, script: Path, connections: int, threads: int, seconds: float) -> Cell:
    """One fixed-duration wrk run; fails loudly when wrk could not report."""
    args = [
        wrk_path(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((x for x in out.stdout.splitlines() if x.startswith(MARKER)), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}) on {url}:\n{out.stdout}\n{out.stderr}")
    data = json.loads(line.removeprefix(MARKER))
    errors = sum(
        data[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    done = data["requests"] > 0
    # wrk reports 0 ms percentiles for a cell where nothing completed: that is no figure.
    return Cell(
        connections=connections,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors if done else max(errors, 1),
        p50_ms=data["p50_us"] / 1000 if done else None,
        p90_ms=data["p90_us"] / 1000 if done else None,
        p99_ms=data["p99_us"] / 1000 if done else None,
        max_ms=data["max_us"] / 1000 if done else None,
    )
