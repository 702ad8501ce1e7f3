"""What `nexus up` holds: start it, measure every process it leaves running, stop it.

``python scripts/footprint.py`` starts ``nexus up`` (CPU worker) on a fresh state
directory and free loopback ports, reads every process of the platform from ``/proc``
(the supervisor gives each service its own session, so a service is its leader's pid
file under ``<state>/run`` and every process of that session), prints the table, and
stops the platform. ``--write-readme`` puts the table between the README's
``footprint`` markers.

Memory is PSS (``/proc/<pid>/smaps_rollup``: shared pages divided among the processes
sharing them, so the column adds up) and RSS (``/proc/<pid>/status`` ``VmRSS``: what
``ps`` shows; shared pages count in every process). "Started" is seconds from the
``nexus up`` command to the process's start (``/proc/<pid>/stat`` field 22).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- footprint:start -->", "<!-- footprint:end -->"
NEXUS = [sys.executable, "-m", "nexus.cli"]
TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Process:
    service: str
    pid: int
    command: str
    pss: int  # bytes
    rss: int  # bytes
    started: float  # seconds since boot


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return [str(pid), "comm", *text[text.rindex(")") + 2 :].split()]


def _kib(path: Path, field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", path.read_text(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def _command(pid: int, state: Path) -> str:
    """The command line, shortened: the program's name, ``<state>`` and ``<venv>`` for paths."""
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    line = " ".join([Path(argv[0]).name, *argv[1:]]) if argv else "?"
    for path, name in ((str(state), "<state>"), (sys.prefix, "<venv>"), (str(ROOT), ".")):
        line = line.replace(path, name)
    return line[:56] + (" ..." if len(line) > 56 else "")


def measure(state: Path) -> list[Process]:
    """Every live process in the session of each pid file under ``<state>/run``."""
    leaders = {int(p.read_text()): p.stem for p in (state / "run").glob("*.pid")}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = _stat(pid)
            service = leaders.get(int(stat[5]))  # field 6: the session id
            if service is None or stat[2] == "Z":
                continue
            pss, rss = _kib(entry / "smaps_rollup", "Pss"), _kib(entry / "status", "VmRSS")
            started = int(stat[21]) / TICKS
            found.append(Process(service, pid, _command(pid, state), pss, rss, started))
        except (OSError, ValueError):
            continue  # exited meanwhile
    return sorted(found, key=lambda p: (p.started, p.pid))


def table(processes: list[Process], since: float) -> str:
    lines = ["| service | process | PSS MiB | RSS MiB | started (s after `nexus up`) |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for p in processes:
        lines.append(f"| {p.service} | `{p.command}` | {p.pss / MIB:.0f} | {p.rss / MIB:.0f} "
                     f"| {p.started - since:.1f} |")  # fmt: skip
    pss, rss = sum(p.pss for p in processes), sum(p.rss for p in processes)
    lines.append(f"| **all {len(processes)} processes** | | **{pss / MIB:.0f}** "
                 f"| **{rss / MIB:.0f}** | |")  # fmt: skip
    # Start times stretch with what else runs: say how busy the machine was.
    load = Path("/proc/loadavg").read_text().split()[0]
    lines += ["", f"Measured with a load average of {load} on {os.cpu_count()} cores."]
    return "\n".join(lines)


def _free_base(span: int) -> int:
    """A loopback port range nobody listens in (a few random tries)."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - span)  # noqa: S311 - not a secret
        if all(_free(port) for port in range(base, base + span)):
            return base
    raise SystemExit("footprint: no free port range found")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run(settle: float) -> str:
    with tempfile.TemporaryDirectory(prefix="nexus-footprint-") as tmp:
        state = Path(tmp) / "state"
        since = _uptime()
        command = [*NEXUS, "up", "--state-dir", str(state), "--port-base", str(_free_base(60))]
        try:
            up = subprocess.run(  # noqa: S603 - our own command
                command, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
            )
            if up.returncode != 0:
                raise SystemExit(f"footprint: nexus up failed:\n{up.stdout}\n{up.stderr}")
            time.sleep(settle)  # let start-up garbage settle, as a platform left running does
            return table(measure(state), since)
        finally:
            down = [*NEXUS, "down", "--state-dir", str(state)]
            subprocess.run(down, cwd=ROOT, capture_output=True, timeout=120, check=False)  # noqa: S603


def write_readme(text: str) -> None:
    readme = README.read_text()
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"footprint: README.md has no {START} ... {END} markers")
    README.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after up, then measure")
    args = parser.parse_args()
    text = run(args.settle)
    print(text)
    if args.write_readme:
        write_readme(text)


if __name__ == "__main__":
    main()
