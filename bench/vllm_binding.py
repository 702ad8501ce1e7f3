"""Local vLLM engines side by side: vLLM's OpenMP thread binding "auto" against "nobind".

``nexus up --predictor vllm`` runs one CPU engine per live revision on one machine. With
``VLLM_CPU_OMP_THREADS_BIND=auto`` vLLM pins each engine's worker to the same core (the last
logical CPU of each physical core, one kept for the front end: ``_parse_omp_threads_bind_env``
in vllm/utils/ompmultiprocessing.py); ``nobind`` leaves placement to the kernel. For each
mode, in one run:

1. engine A starts alone, then serves ``--warm`` streamed requests and sits idle, as a
   stable revision does between requests;
2. engine B starts beside it, as a canary revision does (``--start-timeout`` bounds it);
3. if both are up, each streams ``--requests`` requests at the same time; the wall time and
   each engine's median time to the first token.

``--write-readme`` replaces the README's ``<!-- vllm-binding:begin -->`` …
``<!-- vllm-binding:end -->`` section with the table.

    .venv/bin/python -m bench vllm-binding --write-readme
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import OPENAI_PATH, README
from bench.processes import REPO, Children
from bench.report import write_readme
from bench.vllm import MODEL, Sample, start_engine, stream, vllm_version
from nexus.local import vllm_model
from nexus.local.vllm_engine import has_gpu, vllm_python

START, END = "<!-- vllm-binding:begin -->", "<!-- vllm-binding:end -->"
MODES = ("auto", "nobind")
BIND = "VLLM_CPU_OMP_THREADS_BIND"


def start(children: Children, model_dir: Path, name: str, mode: str,
          timeout: float) -> tuple[int, float | None]:  # fmt: skip
    """An engine as a local revision starts it, with ``mode``; (port, seconds to ready or
    ``None`` when it was not ready within ``timeout``)."""
    try:
        engine, seconds = start_engine(children, model_dir, name=name, env={BIND: mode},
                                       timeout=timeout)  # fmt: skip
    except (TimeoutError, RuntimeError):
        return 0, None
    return engine.port, seconds


def side_by_side(urls: list[str], requests: int) -> tuple[float, list[list[Sample]]]:
    """Each URL streamed ``requests`` times in its own thread, all at once; (wall s, samples)."""
    found: list[list[Sample]] = [[] for _ in urls]

    def run(i: int) -> None:
        for _ in range(requests):
            found[i].append(stream(urls[i], MODEL))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(urls))]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - began, found


def one_mode(model_dir: Path, mode: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    with Children(logs / mode) as children:
        (logs / mode).mkdir(parents=True, exist_ok=True)
        port_a, a_s = start(children, model_dir, "engine-a", mode, args.start_timeout)
        if a_s is None:
            return {"mode": mode, "a_start_s": None}
        url_a = f"http://127.0.0.1:{port_a}{OPENAI_PATH}"
        for _ in range(args.warm):
            stream(url_a, MODEL)
        port_b, b_s = start(children, model_dir, "engine-b", mode, args.start_timeout)
        result: dict[str, Any] = {"mode": mode, "a_start_s": a_s, "b_start_s": b_s}
        if b_s is None:
            return result
        url_b = f"http://127.0.0.1:{port_b}{OPENAI_PATH}"
        wall, samples = side_by_side([url_a, url_b], args.requests)
        result["wall_s"] = wall
        result["ttft_ms"] = [1000 * statistics.median(s.ttft_s for s in runs) for runs in samples]
        return result


def markdown(result: dict[str, Any]) -> str:
    def secs(value: float | None) -> str:
        return f"not ready after {result['start_timeout']:.0f} s" if value is None else (
            f"{value:.0f} s")  # fmt: skip

    rows = ["| binding | A starts alone | B starts beside an idle A | A and B streaming at "
            f"once ({result['requests']} requests each) | median TTFT A / B |",
            "|---|---|---|---|---|"]  # fmt: skip
    for r in result["modes"]:
        wall = f"{r['wall_s']:.1f} s" if "wall_s" in r else "-"
        ttft = " / ".join(f"{t:.0f} ms" for t in r["ttft_ms"]) if "ttft_ms" in r else "-"
        rows.append(f"| `{r['mode']}` | {secs(r['a_start_s'])} | {secs(r.get('b_start_s'))} "
                    f"| {wall} | {ttft} |")  # fmt: skip
    return "\n".join([
        f"Measured {result['date']} by `python -m bench vllm-binding` on {result['machine']}: "
        f"vllm-cpu {result['vllm']}, the tiny Llama, greedy 32-token streams; A served "
        f"{result['warm']} requests before B started; 1-minute load average "
        f"{result['load_before']:.2f} before, {result['load_after']:.2f} after.",
        "",
        *rows,
    ])  # fmt: skip


def main(argv: list[str], *, prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--warm", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    if has_gpu():
        parser.error("this compares CPU engines; a GPU machine does not bind OpenMP threads")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="nexus-bench-binding-") as tmp:
        model = vllm_model.build(vllm_python(REPO), REPO, Path(tmp) / "tiny")
        modes = [one_mode(model.folder, mode, args, Path(tmp) / "logs")
                 for mode in args.modes.split(",")]  # fmt: skip
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.machine()}",
        "vllm": vllm_version(),
        "warm": args.warm,
        "requests": args.requests,
        "start_timeout": args.start_timeout,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "modes": modes,
    }
    print(json.dumps(result, indent=2))
    table = markdown(result)
    print(table)
    if args.write_readme:
        write_readme(README, table, start=START, end=END)
    return 0
