"""How each measured server is started, all on 127.0.0.1, all in front of one upstream.

    cpu_llm (upstream) ◄─┬─ Nexus transformer (API key, Redis limiter, breaker; 1 worker)
                         ├─ kserve.Model pass-through (KServe's default transformer path)
                         ├─ LiteLLM proxy (master key, no database), when its venv exists
    └─ Portkey's gateway (Node, routed by headers), when npm installed it

Beside them, in front of the canned upstream (``fast_upstream.py``), the floors
(``passthrough.py``): aiohttp and lean clients, each with and without one Redis call.

The router benchmark (``router.py``) adds the InferenceGraph router in front of the
transformer or an upstream, a canned-answer upstream (``fast_upstream.py``) and a minimal
ASGI pass-through (``passthrough.py``) as the floor a Python proxy starts from. The
benchmark's own servers run as modules of this package (``python -m bench.<module>``).

LiteLLM lives in its own venv (``bench/.venv-litellm``): its pinned dependencies conflict
with the project's, and it is a point of comparison, not something Nexus depends on.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from bench.processes import REPO, Child, Children, free_port, installed

LITELLM_VENV = REPO / "bench" / ".venv-litellm"
# Portkey's gateway is a Node program: npm installs the pinned version on demand.
PORTKEY_PACKAGE = "@portkey-ai/gateway@1.15.2"
PORTKEY_DIR = REPO / ".nexus" / "bench-node"
PORTKEY_SERVER = (
    PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
)
# The graph the router benchmarks run, as the repository ships it.
CHAT_FALLBACK = REPO / "graphs" / "inferencegraph.chat-fallback.yaml"
READY_TIMEOUT = 60.0
LITELLM_READY_TIMEOUT = 180.0
# High enough that the limiter counts every request but never rejects one in a run.
UNLIMITED_RPM = 1_000_000_000
UNLIMITED_TPM = 1_000_000_000_000


@dataclass(frozen=True, slots=True)
class Server:
    """A started server: where it listens and the process behind it."""

    name: str
    port: int
    child: Child

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve(
    children: Children,
    name: str,
    port: int,
    args: Sequence[str],
    *,
    ready: str | None,
    env: Mapping[str, str] | None = None,
    timeout: float = READY_TIMEOUT,
) -> Server:
    """Start ``args`` listening on ``port``; ready when the path ``ready`` answers below 500
    (``None``: when the port accepts a connection)."""
    child = children.start(name, args, env=env)
    if ready is None:
        child.wait_port(port, timeout=timeout)
    else:
        child.wait_ready(f"http://127.0.0.1:{port}{ready}", timeout=timeout)
    return Server(name, port, child)


def start_upstream(children: Children, *, model: str) -> Server:
    port = free_port()
    args = [sys.executable, "-m", "tests.support.cpu_llm", "--port", str(port), "--model", model]
    return serve(children, "upstream", port, args, ready="/health")


def start_redis(children: Children) -> Server:
    port = free_port()
    args = [installed("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no"]  # fmt: skip
    return serve(children, "redis", port, args, ready=None)


def start_nexus(
    children: Children,
    *,
    upstream: Server,
    redis: Server,
    model: str,
    api_key: str,
    name: str = "nexus",
    extra_env: Mapping[str, str] | None = None,
    entry: Sequence[str] = ("-m", "nexus.transformer"),
) -> Server:
    """The transformer exactly as KServe starts it, with the full governed path switched on;
    ``extra_env`` adds or overrides ``GATEWAY_*`` settings; ``entry`` replaces the module
    (``costs.py`` runs ``-m bench.ablated_transformer`` with its ``--without`` list)."""
    port = free_port()
    args = [sys.executable, *entry, "--model_name", model,
            "--predictor_host", f"127.0.0.1:{upstream.port}", "--http_port", str(port),
            "--workers", "1"]  # fmt: skip
    env = {
        "GATEWAY_API_KEYS": api_key,
        "GATEWAY_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
        "GATEWAY_RATE_LIMIT_PER_MINUTE": str(UNLIMITED_RPM),
        "GATEWAY_TOKENS_PER_MINUTE": str(UNLIMITED_TPM),
        "GATEWAY_RATE_LIMIT_FAILURE_MODE": "closed",  # a Redis problem fails loudly, not fast
        **(extra_env or {}),
    }
    return serve(children, name, port, args, ready="/v2/health/ready", env=env)


def start_kserve_passthrough(children: Children, *, upstream: Server, model: str) -> Server:
    port = free_port()
    args = [sys.executable, "-m", "bench.kserve_passthrough", "--model_name", model,
            "--predictor_host", f"127.0.0.1:{upstream.port}", "--http_port", str(port),
            "--enable_grpc", "false", "--workers", "1"]  # fmt: skip
    return serve(children, "kserve", port, args, ready=f"/v1/models/{model}")


def litellm_bin() -> Path:
    return LITELLM_VENV / "bin" / "litellm"


def ensure_litellm(*, install: bool) -> bool:
    """Whether LiteLLM can be measured; with ``install`` its venv is created when missing."""
    if litellm_bin().exists():
        return True
    if not install:
        return False
    print(f"installing litellm[proxy] into {LITELLM_VENV.relative_to(REPO)} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
    pip = str(LITELLM_VENV / "bin" / "pip")
    subprocess.run([pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    subprocess.run([pip, "install", "--quiet", "litellm[proxy]"], check=True)
    return litellm_bin().exists()


def litellm_version() -> str:
    python = str(LITELLM_VENV / "bin" / "python")
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def start_litellm(
    children: Children, *, upstream: Server, model: str, api_key: str, config_dir: Path
) -> Server:
    """LiteLLM's proxy with the upstream as an OpenAI-compatible model and a master key."""
    config = {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": f"{upstream.base_url}/v1",
                    "api_key": "x",
                },
            }
        ],
        "general_settings": {"master_key": api_key},
    }
    path = config_dir / "litellm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    args = [str(litellm_bin()), "--config", str(path), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]  # fmt: skip
    # The bundled cost map instead of a download at start: the run stays on loopback.
    # PYTHONPATH emptied: the project's modules must not leak into LiteLLM's interpreter.
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONPATH": ""}
    return serve(children, "litellm", port, args, ready="/health/liveliness", env=env,
                 timeout=LITELLM_READY_TIMEOUT)  # fmt: skip


def start_fast_upstream(children: Children) -> Server:
    port = free_port()
    args = [sys.executable, "-m", "bench.fast_upstream", "--port", str(port)]
    return serve(children, "fast-upstream", port, args, ready="/health")


def start_passthrough(
    children: Children,
    *,
    name: str,
    upstream_url: str,
    client: str = "aiohttp",
    redis: Server | None = None,
    server: str = "uvicorn",
) -> Server:
    """A floor (``passthrough.py``): ``client`` ``aiohttp``, ``lean`` or ``nexus``, with
    ``redis`` one EVALSHA per request, on ``server`` ``uvicorn`` or ``edge``."""
    port = free_port()
    args = [sys.executable, "-m", "bench.passthrough", "--upstream", upstream_url,
            "--port", str(port), "--client", client, "--server", server]  # fmt: skip
    if redis is not None:
        args += ["--redis", f"redis://127.0.0.1:{redis.port}/0"]
    return serve(children, name, port, args, ready=None)


def ensure_portkey(*, install: bool) -> bool:
    """Whether Portkey's gateway can be measured; with ``install`` npm fetches the pinned one."""
    if PORTKEY_SERVER.exists():
        return True
    if not install:
        return False
    npm = installed("npm")
    installed("node")
    print(f"installing {PORTKEY_PACKAGE} into {PORTKEY_DIR.relative_to(REPO)} ...", flush=True)
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix",
                    str(PORTKEY_DIR), PORTKEY_PACKAGE], check=True)  # fmt: skip
    return PORTKEY_SERVER.exists()


def portkey_headers(upstream: Server) -> dict[str, str]:
    """How Portkey's gateway is told where to send a request: an OpenAI-shaped custom host."""
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{upstream.base_url}/v1"}


def start_portkey(children: Children) -> Server:
    """Portkey's open-source gateway under Node (one process; it routes by headers)."""
    port = free_port()
    # --headless: without it the gateway also serves its UI and keeps a live log of every
    # request for it, which cut its throughput by about half in a trial here.
    args = [installed("node"), str(PORTKEY_SERVER), f"--port={port}", "--headless"]
    return serve(children, "portkey", port, args, ready=None)


def start_router(
    children: Children,
    *,
    name: str,
    graph_file: Path,
    host_map: dict[str, Server],
    propagate: str,
) -> Server:
    """``python -m nexus.router`` exactly as the local platform runs it (one process)."""
    port = free_port()
    args = [sys.executable, "-m", "nexus.router", "--graph-file", str(graph_file),
            "--port", str(port), "--host", "127.0.0.1", "--drain-seconds", "0"]  # fmt: skip
    for host, server in host_map.items():
        args += ["--host-map", f"{host}=127.0.0.1:{server.port}"]
    return serve(children, name, port, args, ready="/readyz",
                 env={"PROPAGATE_HEADERS": propagate})  # fmt: skip


def graph_hosts(graph_file: Path) -> list[str]:
    """The service hosts of a graph's steps, in order: what ``--host-map`` must send on."""
    graph = yaml.safe_load(graph_file.read_text())
    hosts = [
        urlsplit(step["serviceUrl"]).hostname
        for node in graph["spec"]["nodes"].values()
        for step in node.get("steps", ())
        if step.get("serviceUrl")
    ]
    return list(dict.fromkeys(h for h in hosts if h))
