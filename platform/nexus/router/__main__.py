"""``python -m nexus.router``: KServe's router command line, served by uvicorn.

Accepts the flags KServe's controller passes (``--graph-json``, ``--inferencegraph-name``,
``--enable-tls``, ``--enable-auth``) so the image is a drop-in ``router.image``; TLS and
Kubernetes TokenReview auth are not implemented and refuse to start rather than serve
unprotected. Local-platform extensions: ``--graph-file`` (a whole InferenceGraph
resource), ``--port``, ``--host-map``, ``--drain-seconds``. Limits (issue 12):
``--max-body-bytes``, ``--max-response-bytes``, and the shared edge's ``NEXUS_EDGE_*``
variables (``nexus.edge.protocol``); their defaults apply under KServe, which passes none.
``--any-method`` keeps KServe's every-method graph entry (no model list, no 405s; see
``server.py``).

Status policy (``--status-policy``, else ``NEXUS_ROUTER_STATUS_POLICY``, else ``client``):
``client`` answers the status of the step whose body is returned and turns an unreachable
or plain-5xx primary into an upstream failure its fallback can match; ``kserve`` keeps
KServe's exact semantics (``router/sequence.py``). ``client`` is the image's default because
a platform cannot pass the router anything else. KServe's InferenceGraph reconciler
(v0.20.0, and master at aaac4e294: ``pkg/controller/v1alpha1/inferencegraph/raw_ig.go``
``createInferenceGraphPodSpec``, ``knative_reconciler.go``) builds the router container
from ``inferenceservice-config``'s ``router`` key (``image``, resources, pull policy and
secrets; ``controller.go`` ``RouterConfig``) with the fixed args ``--graph-json <spec>``
and, only when ``headers.propagate`` is set, the one env var ``PROPAGATE_HEADERS``. KServe's
semantics on a cluster therefore take an image whose entrypoint adds
``--status-policy kserve``.

Stream continuation (``--continuation``, else ``NEXUS_ROUTER_CONTINUATION``, else ``on``;
``continuation.py``) is switched the same way, for the same reason: on in the image, an
entrypoint adding ``--continuation off`` turns it off.

On SIGTERM the router does what KServe's does: ``/readyz`` turns 503 at once, requests
are still served for the drain period (30 s, KServe's value) so load balancers notice,
then the server shuts down gracefully. A second signal ends the drain at once.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry

from nexus.edge.protocol import EdgeConfig, EdgeLimits
from nexus.errors import ConfigError
from nexus.observability import AccessLog, configure_json_logging
from nexus.router.calls import StepCaller, parse_host_map
from nexus.router.executor import Executor
from nexus.router.graph import Graph, load_graph_file, load_graph_json
from nexus.router.headers import HeaderPropagation, compile_patterns
from nexus.router.listing import ModelListing
from nexus.router.metrics import RouterMetrics
from nexus.router.reply import DEFAULT_MAX_RESPONSE_BYTES, STATUS_POLICIES, StatusPolicy
from nexus.router.server import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_SERVER_SECONDS,
    RouterApp,
    RouterState,
)

log = logging.getLogger("nexus.router")
DEFAULT_IDLE_SECONDS = 180  # Go's http.Server IdleTimeout in KServe's router
DRAIN_SECONDS = 30.0  # KServe's drainSleepDuration
POLICY_ENV = "NEXUS_ROUTER_STATUS_POLICY"
CONTINUATION_ENV = "NEXUS_ROUTER_CONTINUATION"
SWITCHES = ("on", "off")


def status_policy(flag: str | None, env: Mapping[str, str]) -> StatusPolicy:
    """The flag, else ``NEXUS_ROUTER_STATUS_POLICY``, else ``client``; anything else is refused."""
    value = flag or env.get(POLICY_ENV) or "client"
    for policy in STATUS_POLICIES:
        if value == policy:
            return policy
    raise ConfigError(f"{POLICY_ENV} must be one of {', '.join(STATUS_POLICIES)}, got {value!r}")


def continuation(flag: str | None, env: Mapping[str, str]) -> bool:
    """The flag, else ``NEXUS_ROUTER_CONTINUATION``, else ``on``; anything else is refused."""
    value = flag or env.get(CONTINUATION_ENV) or "on"
    if value not in SWITCHES:
        raise ConfigError(f"{CONTINUATION_ENV} must be on or off, got {value!r}")
    return value == "on"


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nexus.router", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--graph-json", help="InferenceGraphSpec as JSON (what KServe passes)")
    source.add_argument("--graph-file", type=Path, help="a whole InferenceGraph resource (YAML)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument(
        "--host-map",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="send calls for cluster host NAME to HOST:PORT (local platform)",
    )
    parser.add_argument("--drain-seconds", type=float, default=DRAIN_SECONDS)
    parser.add_argument(
        "--max-body-bytes",
        type=_positive,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body; longer ones are answered 413",
    )
    parser.add_argument(
        "--max-response-bytes",
        type=_positive,
        default=DEFAULT_MAX_RESPONSE_BYTES,
        help="largest step answer read whole; longer ones are a 502",
    )
    parser.add_argument(
        "--any-method",
        action="store_true",
        help="KServe's behaviour: every method and path runs the graph (no 405, no model list)",
    )
    parser.add_argument(
        "--status-policy",
        choices=STATUS_POLICIES,
        default=None,
        help="client: the answering step's status (default); kserve: KServe's exact statuses",
    )
    parser.add_argument(
        "--continuation",
        choices=SWITCHES,
        default=None,
        help="on (default): a later conditional step continues a broken stream",
    )
    parser.add_argument("--inferencegraph-name", default="")
    parser.add_argument("--enable-tls", action="store_true")
    parser.add_argument("--enable-auth", action="store_true")
    parser.add_argument("--log-level", default=os.environ.get("NEXUS_LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)  # fmt: skip


class DrainingServer(uvicorn.Server):
    """uvicorn, with KServe's drain: SIGTERM flips readiness first, exits later."""

    def __init__(self, config: uvicorn.Config, *, state: RouterState, drain_seconds: float):
        super().__init__(config)
        self.state = state
        self.drain_seconds = drain_seconds
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if sig != signal.SIGTERM or self.state.draining or self.drain_seconds <= 0 or not loop:
            super().handle_exit(sig, frame)
            return
        self.state.draining = True
        log.info("SIGTERM: readiness is now 503; shutting down in %ss", self.drain_seconds)
        finish = functools.partial(uvicorn.Server.handle_exit, self, sig, frame)
        loop.call_soon_threadsafe(loop.call_later, self.drain_seconds, finish)


def build(
    graph: Graph,
    *,
    host_map: dict[str, str],
    state: RouterState,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    any_method: bool = False,
    policy: StatusPolicy = "client",
    continue_streams: bool = True,
) -> RouterApp:
    """Wire the router's objects; everything mutable is created here, none at import."""
    registry = CollectorRegistry()
    labels = [step.label for node in graph.nodes.values() for step in node.steps]
    metrics = RouterMetrics(registry, steps=labels)
    caller = StepCaller(
        graph=graph, metrics=metrics, host_map=host_map, max_response_bytes=max_response_bytes
    )
    executor = Executor(graph=graph, caller=caller, metrics=metrics, status_policy=policy,
                        continue_streams=continue_streams)  # fmt: skip
    patterns = os.environ.get("PROPAGATE_HEADERS")
    timeouts = graph.timeouts
    return RouterApp(
        executor=executor,
        propagation=HeaderPropagation(compile_patterns(patterns) if patterns else ()),
        metrics=metrics,
        state=state,
        access_log=AccessLog("nexus.router.access"),
        listing=None if any_method else ModelListing(graph=graph, host_map=host_map),
        read_seconds=timeouts.server_read or DEFAULT_SERVER_SECONDS,
        write_seconds=timeouts.server_write or DEFAULT_SERVER_SECONDS,
        max_body_bytes=max_body_bytes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_json_logging(args.log_level.upper())
    # The logging HOWTO's "Optimization" switches: every LogRecord otherwise looks up the
    # thread, process and multiprocessing names that the JSON line never prints. This
    # process is the router alone, so the switches are set for it here, not at import.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    try:
        if args.enable_tls or args.enable_auth:
            raise ConfigError("--enable-tls/--enable-auth are not supported by the Nexus router")
        graph = (
            load_graph_file(args.graph_file)
            if args.graph_file
            else load_graph_json(args.graph_json)
        )
        host_map = parse_host_map(args.host_map)
        limits = EdgeLimits.from_env(os.environ)
        policy = status_policy(args.status_policy, os.environ)
        continue_streams = continuation(args.continuation, os.environ)
    except (ConfigError, ValueError) as exc:
        log.error("cannot start the router: %s", exc)
        return 2
    state = RouterState()
    app = build(
        graph,
        host_map=host_map,
        state=state,
        max_body_bytes=args.max_body_bytes,
        max_response_bytes=args.max_response_bytes,
        any_method=args.any_method,
        policy=policy,
        continue_streams=continue_streams,
    )
    # EdgeConfig serves with nexus.edge's httptools protocol: header, request-line and
    # read-time limits (NEXUS_EDGE_* environment variables).
    config = EdgeConfig(
        app,
        limits=limits,
        host=args.host,
        port=args.port,
        loop="uvloop",
        lifespan="on",
        access_log=False,
        server_header=False,
        # The router never reads the client address; uvicorn's X-Forwarded-For middleware
        # would wrap every request for nothing.
        proxy_headers=False,
        log_config=None,
        timeout_keep_alive=graph.timeouts.server_idle or DEFAULT_IDLE_SECONDS,
    )
    server = DrainingServer(config, state=state, drain_seconds=args.drain_seconds)
    log.info(
        "router serving graph %r on port %d (status policy %s, stream continuation %s)",
        graph.name or "(from --graph-json)",
        args.port,
        policy,
        "on" if continue_streams else "off",
    )
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
