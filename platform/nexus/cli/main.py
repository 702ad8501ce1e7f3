"""The ``nexus`` command: parses arguments and hands over to the packages that do the work.

Each subcommand is one small ``_cmd_*`` function; imports happen inside it so that
``nexus --help`` stays fast and a missing optional extra only affects its own command.
Commands let operational errors (``nexus.errors``) propagate: ``main`` turns every one into
``nexus <command>: <message>`` on stderr and an exit status (2 for a refused input, a
``ConfigError``; 1 otherwise), so no command keeps its own hand-picked ``except`` list.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

Handler = Callable[[argparse.Namespace], int]


def _cmd_transformer(args: argparse.Namespace) -> int:
    from nexus.transformer.__main__ import main as transformer_main

    transformer_main(list(args.rest))
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from nexus.local.platform import Options, default_project_dir, up
    from nexus.local.report import endpoints_table

    options = Options(
        project_dir=args.project_dir or default_project_dir(),
        port_base=args.port_base,
        status_port=args.status_port,
        mlflow_port=args.mlflow_port,
        redis_port=args.redis_port,
        prometheus_port=args.prometheus_port,
        predictor=args.predictor,
        timeout=args.timeout,
    )
    info = up(args.state_dir, options, progress=lambda line: print(f"· {line}", flush=True))
    print(endpoints_table(info))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from nexus.cli.demo import DemoOptions, run
    from nexus.local.platform import Options, default_project_dir

    # Real engines on two shared cores: a canary engine took 6-7 min to start beside
    # three others, and a 30 s window left the canary ~25 samples, whose p95 swung past 1.5x
    # the stable one's (README "Real vLLM"); hence longer bounds and window for vllm.
    vllm = args.predictor == "vllm"
    up_options = Options(
        project_dir=args.project_dir or default_project_dir(),
        port_base=args.port_base,
        timeout=args.timeout or (900.0 if vllm else 300.0),
        predictor=args.predictor,
    )
    options = DemoOptions(
        state_dir=args.state_dir,
        up=up_options,
        analysis_window_s=args.analysis_window or (60.0 if vllm else 30.0),
        wait_timeout_s=args.wait_timeout or (900.0 if vllm else 300.0),
        steps=args.steps,
        refuse_seconds=args.refuse_seconds,
        inline=args.inline,
    )
    return run(options, say=lambda line: print(line, flush=True))


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    from nexus.local.platform import status
    from nexus.local.report import status_table

    live = status(args.state_dir)
    if live is None:
        print("nothing is running (start it with `nexus up`)")
        return 3
    print(json.dumps(live, indent=2) if args.json else status_table(live))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    from nexus.local.platform import down

    stopped = down(args.state_dir)
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _cmd_lint(args: argparse.Namespace) -> int:
    from nexus.manifests.findings import format_json, format_text, has_errors
    from nexus.manifests.lint import run

    findings, source = run(args.paths, crds=args.crds, isolated=args.isolated)
    if args.format == "json":
        sys.stdout.write(format_json(findings) + "\n")
    else:
        sys.stderr.write(f"nexus lint: custom resources checked against {source}\n")
        sys.stdout.write(format_text(findings))
    return 1 if has_errors(findings) else 0


def _cmd_schemas_generate(args: argparse.Namespace) -> int:
    from nexus.errors import ConfigError
    from nexus.manifests.bundle import Bundle, generate, packaged_dir, write

    out = args.out or packaged_dir()
    pairs = [source.partition("=") for source in args.source]
    if any(not group or not label for group, _, label in pairs):
        raise ConfigError("--source takes GROUP=LABEL, e.g. serving.kserve.io=kserve@v0.21.0")
    write(generate(args.crds, {group: label for group, _, label in pairs}), out)
    bundle = Bundle.load(out)
    print(f"wrote {len(bundle.kinds)} kinds to {out}: {bundle.describe()}")
    return 0


def _cmd_registry_register(args: argparse.Namespace) -> int:
    from nexus.cli.registry import register

    return register(args)


def _cmd_registry_evaluation_set(args: argparse.Namespace) -> int:
    from nexus.cli.registry import evaluation_set

    return evaluation_set(args)


def _cmd_release(args: argparse.Namespace) -> int:
    from nexus.cli.release import release

    return release(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus", description="KServe-native LLM serving platform")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(handler=handler)
        return command

    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir", type=Path, default=Path(".nexus"), help="state and logs (default: .nexus)"
    )
    up = sub.add_parser(
        "up", parents=[state], help="run the platform locally", description="run the platform"
    )
    up.set_defaults(handler=_cmd_up)
    up.add_argument(
        "--port-base",
        type=int,
        default=None,
        help="first port of the range (default: as booked before, else 18100)",
    )
    for flag in ("status", "mlflow", "redis", "prometheus"):
        up.add_argument(f"--{flag}-port", type=int, default=None, help=f"fixed {flag} port")
    up.add_argument("--project-dir", type=Path, default=None, help="checkout to seed GitOps from")
    up.add_argument(
        "--predictor",
        choices=("cpu", "vllm"),
        default="cpu",
        help="vllm: real vLLM engines (make vllm first; without a GPU they serve a tiny model)",
    )
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for health")
    demo = sub.add_parser(
        "demo",
        parents=[state],
        help="register, release, canary and promote llama-8b, then show the fallback",
        description="the release story on the local platform (starts `nexus up` if needed); "
        "exit status 0 promoted, 3 rolled back, 1 failed",
    )
    demo.set_defaults(handler=_cmd_demo)
    demo.add_argument("--port-base", type=int, default=None, help="for `nexus up`, if it starts")
    demo.add_argument("--project-dir", type=Path, default=None, help="checkout to seed GitOps from")
    demo.add_argument("--timeout", type=float, default=None,
                      help="seconds to wait for health (300; vllm: 900)")  # fmt: skip
    demo.add_argument("--predictor", choices=("cpu", "vllm"), default="cpu",
                      help="for `nexus up`: vllm runs real vLLM engines")  # fmt: skip
    demo.add_argument("--analysis-window", type=float, default=None, metavar="SECONDS",
                      help="the canary's judged window (30; vllm: 60)")  # fmt: skip
    demo.add_argument("--wait-timeout", type=float, default=None, metavar="SECONDS",
                      help="bound of each rollout wait (300; vllm: 900)")  # fmt: skip
    demo.add_argument("--steps", default="20,50,100", metavar="PERCENTS",
                      help="the second release's traffic steps (20,50,100)")  # fmt: skip
    demo.add_argument("--refuse-seconds", type=float, default=60.0, metavar="SECONDS",
                      help="how long the primary's worker refuses connections")  # fmt: skip
    demo.add_argument("--inline", action="store_true",
                      help="run the release steps in this process, without kfp.local")  # fmt: skip
    status = sub.add_parser("status", parents=[state], help="show InferenceServices and graphs")
    status.set_defaults(handler=_cmd_status)
    status.add_argument("--json", action="store_true", help="the raw objects")
    down = sub.add_parser("down", parents=[state], help="stop everything `nexus up` started")
    down.set_defaults(handler=_cmd_down)

    passthrough = add(
        "transformer", _cmd_transformer, "run the KServe transformer (same flags as KServe)"
    )
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
        help="folder of CRD YAML, e.g. kubectl get crd NAME -o yaml "
        "(default: $NEXUS_CRDS_DIR, else the schemas shipped with Nexus)",
    )
    lint.add_argument("--format", choices=("text", "json"), default="text")
    lint.add_argument(
        "--isolated",
        action="store_true",
        help="use only PATHs as context (not the rest of the repository)",
    )
    schemas = sub.add_parser("schemas", help="the CRD schemas `nexus lint` ships")
    schemas_sub = schemas.add_subparsers(dest="schemas_command", required=True, metavar="CMD")
    generate = schemas_sub.add_parser(
        "generate",
        help="compact CRD YAML into the bundled structural schemas",
        description="keep types, required, enums, x-kubernetes-* markers and unknown-field "
        "rules of every served version; drop descriptions",
    )
    generate.set_defaults(handler=_cmd_schemas_generate)
    generate.add_argument("--crds", type=Path, required=True, metavar="DIR",
                          help="CRD YAML files or kubectl get crd -o yaml Lists")  # fmt: skip
    generate.add_argument("--source", action="append", default=[], metavar="GROUP=LABEL",
                          help="where the CRDs of an API group come from (repeatable)")  # fmt: skip
    generate.add_argument("--out", type=Path, default=None, metavar="DIR",
                          help="default: the package's nexus/manifests/schemas")  # fmt: skip
    _add_release_commands(sub, state)
    return parser


def _add_release_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], state: argparse.ArgumentParser
) -> None:
    tracking = argparse.ArgumentParser(add_help=False)
    tracking.add_argument(
        "--tracking-uri", default="", help="MLflow (default: $MLFLOW_TRACKING_URI, .nexus/)"
    )
    registry = sub.add_parser("registry", help="the MLflow model registry", description=(
        "register model versions with validated serving tags; attach evaluation sets"))  # fmt: skip
    registry_sub = registry.add_subparsers(dest="registry_command", required=True, metavar="CMD")
    register = registry_sub.add_parser(
        "register", parents=[tracking, state], help="register a model version for serving"
    )
    register.set_defaults(handler=_cmd_registry_register)
    register.add_argument("name", help="registered model = InferenceService name")
    register.add_argument(
        "--storage-uri", required=True, help="hf://, s3://, gs://, pvc://, oci://"
    )
    register.add_argument("--runtime", required=True, choices=("huggingface", "vllm"))
    register.add_argument("--gpu-pool", required=True, help="a GPU pool of platform/pools.yaml")
    register.add_argument("--max-model-len", type=int)
    register.add_argument(
        "--args", default="", help="extra vLLM arguments, a JSON list: '[\"--x=1\"]'"
    )
    register.add_argument("--min-replicas", type=int, default=1)
    register.add_argument("--max-replicas", type=int, default=1)
    register.add_argument("--fallback", default="", help="model an InferenceGraph falls back to")
    register.add_argument(
        "--model-alias",
        action="append",
        default=[],
        metavar="NAME",
        help="extra public model name it answers for (repeatable), e.g. the 'chat' of a graph",
    )
    evaluation = registry_sub.add_parser(
        "evaluation-set", parents=[tracking, state],
        help="attach the quality gate's evaluation set (JSON) and thresholds to a model",
    )  # fmt: skip
    evaluation.set_defaults(handler=_cmd_registry_evaluation_set)
    evaluation.add_argument("name", help="registered model")
    evaluation.add_argument("file", type=Path, help='JSON: {"examples": [{"prompt", "reference",'
                            ' "max_tokens", "checks": [{"contains": ...}]}]}')  # fmt: skip
    evaluation.add_argument("--max-logprob-drop", type=float,
                            help="nats per token the candidate may lose (default 0.5)")  # fmt: skip
    evaluation.add_argument("--max-check-drop", type=float,
                            help="share of checks the candidate may lose (default 0)")  # fmt: skip
    evaluation.add_argument("--min-examples", type=int, help="fewer examples block (default 1)")
    evaluation.add_argument("--judge", help="pairwise judge: an OpenAI base URL (.../v1) or the "
                            "name of an InferenceService in the release's namespace")  # fmt: skip
    evaluation.add_argument(
        "--judge-min-examples", type=int, help="fewer decisive comparisons never block (default 10)"
    )
    evaluation.add_argument(
        "--judge-alpha", type=float, help="the judge's sign test blocks below it (default 0.05)"
    )

    release = sub.add_parser(
        "release",
        parents=[tracking, state],
        help="release a model version (canary, analysis, promote or roll back)",
        description="run the release pipeline through kfp.local, or submit it with --kfp-host; "
        "exit status 0 promoted, 3 rolled back, 1 failed",
    )
    release.set_defaults(handler=_cmd_release)
    release.add_argument("name")
    release.add_argument("--version", required=True)
    release.add_argument("--environment", default="prod")
    release.add_argument("--canary-percent", type=int, default=10,
                         help="the one canary step when neither --steps nor the model's "
                         "serving.canary_steps tag gives steps")  # fmt: skip
    release.add_argument("--steps", default="", metavar="P,P,...,100",
                         help="traffic steps of the canary, each judged on its own window, "
                         "e.g. 10,25,50,100 (default: the model's serving.canary_steps "
                         "tag)")  # fmt: skip
    release.add_argument("--analysis-window", type=float, default=None, metavar="SECONDS",
                         help="default 600 (60 for --environment local)")  # fmt: skip
    release.add_argument("--max-error-ratio", type=float, default=0.02)
    release.add_argument("--max-p95-latency-ratio", type=float, default=1.5)
    release.add_argument("--min-canary-requests", type=int, default=10)
    release.add_argument("--wait-timeout", type=float, default=900.0, metavar="SECONDS")
    release.add_argument("--namespace", default="nexus")
    for flag in ("--gitops-repo", "--prometheus-url", "--status-url"):
        release.add_argument(flag, default="", help="default: .nexus/endpoints.json")
    release.add_argument("--kfp-host", default="", help="submit to this KFP instead of running")
    release.add_argument(
        "--inline", action="store_true", help="run the steps in this process, without kfp.local"
    )
    release.add_argument("--package", type=Path, default=Path("pipelines/compiled/release.yaml"),
                         help="compiled pipeline for --kfp-host")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an operational error becomes one line on stderr and an exit status."""
    from nexus.errors import ConfigError, NexusError

    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except NexusError as exc:
        words = (args.command, getattr(args, "registry_command", None),
                 getattr(args, "schemas_command", None))  # fmt: skip
        command = " ".join(["nexus", *(w for w in words if w)])
        refused = isinstance(exc, ConfigError)
        print(f"{command}: {'refused: ' if refused else ''}{exc}", file=sys.stderr)
        return 2 if refused else 1
