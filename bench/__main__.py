"""The one entry point of the benchmarks: ``python -m bench <name> [options]``."""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

from bench.processes import terminate_on_sigterm

# name on the command line -> module; each module's docstring says what it measures.
BENCHMARKS = {
    "transformer": "bench.transformer",
    "router": "bench.router",
    "costs": "bench.costs",
    "limiter-redis": "bench.limiter_redis",
    "resp": "bench.resp",
    "vllm": "bench.vllm",
    "vllm-binding": "bench.vllm_binding",
    "chaos": "bench.chaos",
}
USAGE = "usage: python -m bench <name> [options]   (python -m bench <name> --help)"


def load(name: str) -> ModuleType:
    return importlib.import_module(BENCHMARKS[name])


def listing() -> str:
    width = max(map(len, BENCHMARKS))
    lines = [USAGE, "", "benchmarks:"]
    for name in BENCHMARKS:
        summary = (load(name).__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<{width}}  {summary}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "--list"):
        print(listing())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}\n{USAGE}",
              file=sys.stderr)  # fmt: skip
        return 2
    # SIGTERM becomes SystemExit, so leaving ``Children`` stops the servers then too.
    terminate_on_sigterm()
    try:
        result: int = load(name).main(rest, prog=f"python -m bench {name}")
    except KeyboardInterrupt:
        # The servers were stopped on the way out of main(); no traceback for a Ctrl-C.
        print("\ninterrupted: every server started was stopped", file=sys.stderr)
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
