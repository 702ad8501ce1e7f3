"""Entry point: KServe's ``ModelServer`` arguments, ``GATEWAY_*`` settings, uvicorn workers.

KServe is not imported on the way to serving: ``import kserve`` loads the Kubernetes
client, pandas and FastAPI (``kserve/__init__.py``, 0.21.0), 1.7 s and ~160 MiB of a
transformer's 218 MiB RSS (``python -X importtime``; ``scripts/footprint.py``). The flags a
transformer reads are parsed here as KServe parses them, and KServe's own parser is used
for any command line beyond them; KServe's app is built on the first request only it
serves (``app.Transformer.kserve_app``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from typing import NoReturn

import orjson

from nexus.config import GatewaySettings, load_settings
from nexus.edge.asgi import ASGIApp, ForeignApp
from nexus.edge.protocol import EdgeLimits, serve
from nexus.errors import ConfigError
from nexus.observability import AccessLog, TransformerMetrics, configure_json_logging, new_registry
from nexus.transformer.app import Transformer
from nexus.transformer.upstream import Upstream

ARGV_ENV = "NEXUS_TRANSFORMER_ARGV"
PROG = "python -m nexus.transformer"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line as KServe's own ``ModelServer`` parser reads it.

    The flags KServe's controller passes a transformer (``--model_name``,
    ``--predictor_host``, ``--http_port``, ``--workers``; see ``manifests/admission.py``) and
    the others this module reads are parsed without KServe. Anything else (another KServe
    flag, ``--help``, an abbreviation, a value the short parser does not take) goes to
    KServe's parser, so it is accepted, refused or printed exactly as before.
    """
    try:
        args, rest = _short_parser().parse_known_args(argv)
    except _NeedsKServe:
        rest = argv
    if not rest:
        return args
    return _kserve_parser().parse_args(argv)


class _NeedsKServe(Exception):
    """The command line is for KServe's parser to read (or to refuse, in its words)."""


class _ShortParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _NeedsKServe(message)


def _short_parser() -> argparse.ArgumentParser:
    """The KServe flags this module reads, with the names, types and defaults of
    ``kserve/model_server.py`` (0.21.0); ``tests/transformer/test_lean_start.py`` compares."""
    parser = _ShortParser(prog=PROG, add_help=False, allow_abbrev=False)
    parser.add_argument("--http_port", default=8080, type=int)
    parser.add_argument("--workers", default=1, type=int)
    parser.add_argument("--timeout-keep-alive", dest="timeout_keep_alive", default=65, type=int)
    parser.add_argument("--model_name", default="model", type=str)
    parser.add_argument("--predictor_host", default=None, type=str)
    parser.add_argument("--predictor_use_ssl", default=False, type=_true_or_false)
    parser.add_argument("--ssl_certfile", default=os.environ.get("KSERVE_TLS_CERT_FILE"), type=str)
    parser.add_argument("--ssl_keyfile", default=os.environ.get("KSERVE_TLS_KEY_FILE"), type=str)
    _add_own_flags(parser)
    return parser


def _true_or_false(value: str) -> bool:
    """``true``/``false`` in any case; KServe's parser reads every other spelling it takes."""
    spelled = value.lower()
    if spelled not in ("true", "false"):
        raise ValueError(value)
    return spelled == "true"


def _kserve_parser() -> argparse.ArgumentParser:
    """KServe's own ``ModelServer`` parser, so the controller's flags mean what they mean there."""
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(
        prog=PROG,
        parents=[kserve_parser],
        description="Nexus transformer: governed OpenAI and KServe v1/v2 proxy",
    )
    _add_own_flags(parser)
    return parser


def _add_own_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log_level", default=os.environ.get("LOG_LEVEL", "INFO"))
    # Not a KServe flag: KServe's server always binds every interface, right in a pod;
    # a transformer run on a workstation (the local platform) binds loopback only.
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")


def settings_from(args: argparse.Namespace) -> GatewaySettings:
    return load_settings(
        os.environ,
        model_name=args.model_name,
        predictor_host=args.predictor_host,
        use_ssl=args.predictor_use_ssl,
    )


def create_app(settings: GatewaySettings) -> ASGIApp:
    return Transformer(
        settings=settings,
        metrics=TransformerMetrics(new_registry(), tenant_label=settings.tenant_label),
        build_kserve_app=partial(_build_kserve_app, settings),
        access_log=AccessLog("nexus.transformer"),
    )


def _build_kserve_app(settings: GatewaySettings, upstream: Upstream) -> ForeignApp:
    # Imported on first use: importing kserve_bridge imports KServe (see the docstring).
    from nexus.transformer.kserve_bridge import build_kserve_app

    return build_kserve_app(settings, upstream)


def app_from_env() -> ASGIApp:
    """uvicorn factory for worker processes: the parent's argv travels in the environment."""
    args = parse_args(orjson.loads(os.environ[ARGV_ENV]))
    configure_json_logging(args.log_level)
    return create_app(settings_from(args))


def main(
    argv: list[str] | None = None, *, make_app: Callable[[GatewaySettings], ASGIApp] = create_app
) -> None:
    """Serve the transformer; ``make_app`` builds a one-worker server's application (workers
    build ``create_app``'s): ``bench/ablated_transformer.py`` passes one with parts off."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    configure_json_logging(args.log_level)
    try:
        settings = settings_from(args)
        limits = EdgeLimits.from_env(os.environ)
    except ConfigError as exc:
        print(f"nexus transformer: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    common = {
        "host": args.host,
        "port": args.http_port,
        "loop": "uvloop",
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        # Client addresses are not used; uvicorn's X-Forwarded-For middleware is pure cost.
        "proxy_headers": False,
        "timeout_keep_alive": args.timeout_keep_alive,
        "ssl_certfile": args.ssl_certfile,
        "ssl_keyfile": args.ssl_keyfile,
    }
    if args.workers > 1 and make_app is not create_app:
        print("nexus transformer: a replaced app is served by one worker only", file=sys.stderr)
        raise SystemExit(2)
    if args.workers > 1:
        # Workers share one listening socket; metrics are merged through shared files.
        os.environ[ARGV_ENV] = orjson.dumps(argv).decode()
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="nexus-metrics-"))
        serve(
            "nexus.transformer.__main__:app_from_env",
            limits=limits,
            factory=True,
            workers=args.workers,
            **common,
        )
    else:
        # Header/body limits and read timeouts live in the shared edge (nexus.edge.protocol).
        serve(make_app(settings), limits=limits, **common)


if __name__ == "__main__":
    main()
