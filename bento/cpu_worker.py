"""Start the CPU worker as one process that owns its listening socket.

    python bento/cpu_worker.py --model-name chat --port 9000 [--token-latency-ms 5] ...

This runs the BentoML service ``service:CpuWorker`` exactly as a BentoML worker does
(``Service.to_asgi()`` under uvicorn, see ``_bentoml_impl.worker.service``) minus the
circus arbiter of ``bentoml serve``, for two reasons. It starts in about a third of the
time and is a single process to supervise, which matters when the local platform starts a
worker per revision. And owning the socket is what lets the ``refuse`` fault close it (new
connections are refused) and reopen it on the same port; under ``bentoml serve`` the
arbiter holds the socket. ``bentoml serve service:CpuWorker`` still works for everything
else, configured by the same environment variables.

The flags a KServe custom predictor gets are accepted in both spellings (``--model-name``
/ ``--model_name``, ``--port`` / ``--http_port``), ``MODEL_NAME`` and ``PORT`` (set by
Knative) are read when no flag is given, and vLLM flags this fake engine has no use for
(``--max-model-len`` ...) are ignored with a note, so a vLLM container's args fit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger("nexus.cpu_worker")


def _log_reopen_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("reopening the listening socket failed: %s", task.exception())


FAULT_FLAGS: dict[str, type] = {
    "token_latency_ms": float,
    "first_token_latency_ms": float,
    "error_ratio": float,
    "error_status": int,
    "break_stream_after": int,
    "refuse_seconds": float,
}


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model = os.environ.get("MODEL_NAME", "chat")
    parser.add_argument("--model-name", "--model_name", "--model", dest="model", default=model)
    port = int(os.environ.get("PORT", "8080"))
    parser.add_argument("--port", "--http_port", "--http-port", dest="port", type=int, default=port)
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    # Also serve on this port, which stays open while refusing (to clear the fault).
    parser.add_argument("--admin-port", type=int, default=None)
    parser.add_argument("--max-num-seqs", type=int, default=None)
    for name, kind in FAULT_FLAGS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    parser.add_argument("--hang", action="store_true", default=None)
    parser.add_argument("--refuse", action="store_true", default=None)
    # Answer as a broken model does (garbage text, unlikely prompt tokens): the quality gate's foe.
    parser.add_argument("--garble", action="store_true", default=None)
    parser.add_argument("--log-level", default="warning")
    return parser.parse_known_args(argv)


def configure_env(args: argparse.Namespace) -> None:
    """Flags become the environment ``service`` reads, so both entry points configure alike."""
    os.environ["MODEL_NAME"] = args.model
    if args.max_num_seqs is not None:
        os.environ["NEXUS_WORKER_MAX_NUM_SEQS"] = str(args.max_num_seqs)
    for name in [*FAULT_FLAGS, "hang", "refuse", "garble"]:
        value = getattr(args, name)
        if value is not None:
            os.environ["NEXUS_WORKER_" + name.upper()] = str(value)


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class SocketOwner:
    """The ``Listener`` the service drives for the refuse fault, over uvicorn's own state."""

    def __init__(self, server: Any, *, host: str, port: int, admin_port: int | None) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.admin_port = admin_port

    def _main_servers(self) -> list[Any]:
        # uvicorn makes ``servers`` after the app's startup, where refuse-at-start runs.
        return [s for s in getattr(self.server, "servers", [])
                if any(k.getsockname()[1] == self.port for k in s.sockets)]  # fmt: skip

    def _connections(self) -> list[Any]:
        owned = []
        for conn in list(self.server.server_state.connections):
            transport = getattr(conn, "transport", None)
            local = transport.get_extra_info("sockname") if transport else None
            if local and local[1] == self.port:
                owned.append(conn)
        return owned

    def refuse(self) -> None:
        """Stop listening (connects get RST), and close idle keep-alive connections."""
        for server in self._main_servers():
            server.close()
            self.server.servers.remove(server)
        for conn in self._connections():
            cycle = getattr(conn, "cycle", None)
            if cycle is None or cycle.response_complete:
                conn.transport.close()

    def accept(self) -> None:
        if self._main_servers():
            return
        config = self.server.config

        def protocol() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[no-any-return]
                config=config,
                server_state=self.server.server_state,
                app_state=self.server.lifespan.state,
            )

        async def listen() -> None:
            sock = bind(self.host, self.port)
            loop = asyncio.get_running_loop()
            server = await loop.create_server(protocol, sock=sock, backlog=config.backlog)
            self.server.servers.append(server)

        task = asyncio.get_running_loop().create_task(listen())
        task.add_done_callback(_log_reopen_failure)

    def _find(self, client: tuple[str, int]) -> Any:
        for conn in self._connections():
            if tuple(getattr(conn, "client", None) or ()) == tuple(client):
                return conn
        return None

    def reset(self, client: tuple[str, int]) -> None:
        """Abort a connection: the client sees a reset, as from a dead server."""
        conn = self._find(client)
        if conn is not None:
            conn.transport.abort()

    def close_stream(self, client: tuple[str, int]) -> bool:
        """Close a connection mid-stream after flushing what was written (a crash mid-answer)."""
        conn = self._find(client)
        if conn is None:
            return False
        conn.transport.close()
        return True


def main(argv: list[str] | None = None) -> None:
    args, unknown = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if unknown:
        log.warning("ignoring arguments a fake engine has no use for: %s", " ".join(unknown))
    if args.refuse and not (args.admin_port or args.refuse_seconds):
        sys.exit("--refuse at start needs --admin-port or --refuse-seconds to ever accept again")
    configure_env(args)
    # BentoML collects metrics in Prometheus multiprocess mode; a private directory per
    # worker keeps several workers on one machine from mixing (or wiping) each other's.
    metrics_dir = Path(tempfile.mkdtemp(prefix="nexus-cpu-worker-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    try:
        serve(args)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def serve(args: argparse.Namespace) -> None:
    import uvicorn  # after PROMETHEUS_MULTIPROC_DIR: prometheus_client reads it on import

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import service

    config = uvicorn.Config(
        app=service.CpuWorker.to_asgi(),  # type: ignore[attr-defined]  # added by @bentoml.service
        log_config=None,
        log_level=args.log_level,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    owner = SocketOwner(server, host=args.host, port=args.port, admin_port=args.admin_port)
    service.app.state.listener = owner
    sockets = [] if args.refuse else [bind(args.host, args.port)]
    if args.admin_port:
        sockets.append(bind(args.host, args.admin_port))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)


if __name__ == "__main__":
    main()
