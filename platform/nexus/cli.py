"""The ``nexus`` command: parses arguments and hands over to the packages that do the work.

Each subcommand is one small ``_cmd_*`` function; imports happen inside it so that
``nexus --help`` stays fast and a missing optional extra only affects its own command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]


def _cmd_transformer(args: argparse.Namespace) -> int:
    from nexus.transformer.__main__ import main as transformer_main

    transformer_main(list(args.rest))
    return 0


def _cmd_cpu_llm(args: argparse.Namespace) -> int:
    from nexus.local.cpu_llm import main as cpu_llm_main

    cpu_llm_main(list(args.rest))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus", description="KServe-native LLM serving platform")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    passthrough = add(
        "transformer", _cmd_transformer, "run the KServe transformer (same flags as KServe)"
    )
    passthrough.add_argument("rest", nargs=argparse.REMAINDER)
    passthrough = add("cpu-llm", _cmd_cpu_llm, "run the vLLM-shaped CPU server")
    passthrough.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
