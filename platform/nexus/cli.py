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


def _cmd_lint(args: argparse.Namespace) -> int:
    from nexus.manifests.findings import format_json, format_text, has_errors
    from nexus.manifests.lint import run

    findings, crds_dir = run(args.paths, crds=args.crds, isolated=args.isolated)
    if args.format == "json":
        sys.stdout.write(format_json(findings) + "\n")
    else:
        if crds_dir is None:
            sys.stderr.write("nexus lint: no CRD directory; custom resources are not validated\n")
        sys.stdout.write(format_text(findings))
    return 1 if has_errors(findings) else 0


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
    lint = add("lint", _cmd_lint, "check manifests against CRD schemas and Nexus' rules")
    lint.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="files or folders (default: the repository's manifest folders)",
    )
    lint.add_argument(
        "--crds",
        metavar="DIR",
        help="folder of CRD YAML (default: $NEXUS_CRDS_DIR, else <repo>/../shared/crds)",
    )
    lint.add_argument("--format", choices=("text", "json"), default="text")
    lint.add_argument(
        "--isolated",
        action="store_true",
        help="use only PATHs as context (not the rest of the repository)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
