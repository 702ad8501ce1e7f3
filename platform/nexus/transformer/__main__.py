"""Entry point: KServe's ``ModelServer`` arguments, ``GATEWAY_*`` settings, uvicorn workers."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from functools import partial

import orjson

from nexus.config import GatewaySettings, load_settings
from nexus.edge.asgi import ASGIApp
from nexus.edge.protocol import EdgeLimits, serve
from nexus.errors import ConfigError
from nexus.observability import AccessLog, TransformerMetrics, configure_json_logging, new_registry
from nexus.transformer.app import Transformer
from nexus.transformer.kserve_bridge import build_kserve_app

ARGV_ENV = "NEXUS_TRANSFORMER_ARGV"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """KServe's own ``ModelServer`` parser, so the controller's flags mean what they mean there."""
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(
        prog="python -m nexus.transformer",
        parents=[kserve_parser],
        description="Nexus transformer: governed OpenAI and KServe v1/v2 proxy",
    )
    parser.add_argument("--log_level", default=os.environ.get("LOG_LEVEL", "INFO"))
    # Not a KServe flag: KServe's server always binds every interface, right in a pod;
    # a transformer run on a workstation (the local platform) binds loopback only.
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    return parser.parse_args(argv)


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
        build_kserve_app=partial(build_kserve_app, settings),
        access_log=AccessLog("nexus.transformer"),
    )


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
