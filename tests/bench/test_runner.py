"""The benchmarks' one entry point, ``python -m bench``, run as users and ``make bench`` run it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from bench.__main__ import BENCHMARKS

REPO = Path(__file__).resolve().parents[2]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def benchmark_modules() -> set[str]:
    """Every module of ``bench/`` whose ``main`` takes the runner's ``prog``: a benchmark."""
    found = set()
    for path in (REPO / "bench").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            is_main = isinstance(node, ast.FunctionDef) and node.name == "main"
            if is_main and any(arg.arg == "prog" for arg in node.args.kwonlyargs):
                found.add(f"bench.{path.stem}")
    return found


def test_every_benchmark_module_is_registered_and_listed() -> None:
    assert set(BENCHMARKS.values()) == benchmark_modules()
    listed = run_bench()
    assert listed.returncode == 0, listed.stderr
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.startswith("  ")]
    assert names == list(BENCHMARKS)


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_benchmark_answers_help(name: str) -> None:
    done = run_bench(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m bench {name}")


def test_an_unknown_benchmark_is_refused() -> None:
    done = run_bench("no-such-benchmark")
    assert done.returncode == 2
    assert "unknown benchmark 'no-such-benchmark'" in done.stderr
