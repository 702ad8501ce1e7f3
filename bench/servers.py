"""How each measured server is started, all on 127.0.0.1, all in front of one upstream.

    cpu_llm (upstream) ◄─┬─ Nexus transformer (API key, Redis limiter, breaker; 1 worker)
                         ├─ kserve.Model pass-through (KServe's default transformer path)
                         ├─ LiteLLM proxy (master key, no database), when its venv exists
    └─ Portkey's gateway (Node, routed by headers), when npm installed it

Beside them, in front of the canned upstream (``fast_upstream.py``), the floors
(``passthrough.py``): aiohttp and lean clients, each with and without one Redis call.

The router benchmark (``bench/router.py``) adds the InferenceGraph router in front of the
transformer or an upstream, a canned-answer upstream (``fast_upstream.py``) and a minimal
ASGI pass-through (``passthrough.py``) as the floor a Python proxy starts from.

LiteLLM lives in its own venv (``bench/.venv-litellm``): its pinned dependencies conflict
with the project's, and it is a point of comparison, not something Nexus depends on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from processes import REPO, Child, Children, free_port

LITELLM_VENV = REPO / "bench" / ".venv-litellm"
# Portkey's gateway is a Node program: npm installs the pinned version on demand.
PORTKEY_PACKAGE = "@portkey-ai/gateway@1.15.2"
PORTKEY_DIR = REPO / ".nexus" / "bench-node"
PORTKEY_SERVER = (
    PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
)
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


def start_upstream(children: Children, *, model: str) -> Server:
    port = free_port()
    args = [sys.executable, "-m", "tests.support.cpu_llm", "--port", str(port), "--model", model]
    child = children.start("upstream", args)
    child.wait_ready(f"http://127.0.0.1:{port}/health", timeout=READY_TIMEOUT)
    return Server("upstream", port, child)


def start_redis(children: Children) -> Server:
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed: `make system-deps` installs it")
    port = free_port()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    child = children.start("redis", args)
    child.wait_port(port, timeout=READY_TIMEOUT)
    return Server("redis", port, child)


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
    (``costs.py`` runs ``ablated_transformer.py`` with its ``--without`` list)."""
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
    child = children.start(name, args, env=env)
    child.wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", timeout=READY_TIMEOUT)
    return Server(name, port, child)


def start_kserve_passthrough(children: Children, *, upstream: Server, model: str) -> Server:
    port = free_port()
    script = REPO / "bench" / "kserve_passthrough.py"
    args = [sys.executable, str(script), "--model_name", model,
            "--predictor_host", f"127.0.0.1:{upstream.port}", "--http_port", str(port),
            "--enable_grpc", "false", "--workers", "1"]  # fmt: skip
    child = children.start("kserve", args)
    child.wait_ready(f"http://127.0.0.1:{port}/v1/models/{model}", timeout=READY_TIMEOUT)
    return Server("kserve", port, child)


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
    child = children.start("litellm", args, env=env)
    child.wait_ready(f"http://127.0.0.1:{port}/health/liveliness", timeout=LITELLM_READY_TIMEOUT)
    return Server("litellm", port, child)


def start_fast_upstream(children: Children) -> Server:
    port = free_port()
    script = REPO / "bench" / "fast_upstream.py"
    child = children.start("fast-upstream", [sys.executable, str(script), "--port", str(port)])
    child.wait_ready(f"http://127.0.0.1:{port}/health", timeout=READY_TIMEOUT)
    return Server("fast-upstream", port, child)


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
    script = REPO / "bench" / "passthrough.py"
    args = [sys.executable, str(script), "--upstream", upstream_url, "--port", str(port),
            "--client", client, "--server", server]  # fmt: skip
    if redis is not None:
        args += ["--redis", f"redis://127.0.0.1:{redis.port}/0"]
    child = children.start(name, args)
    child.wait_port(port, timeout=READY_TIMEOUT)
    return Server(name, port, child)


def ensure_portkey(*, install: bool) -> bool:
    """Whether Portkey's gateway can be measured; with ``install`` npm fetches the pinned one."""
    if PORTKEY_SERVER.exists():
        return True
    if not install:
        return False
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise SystemExit("node and npm are not installed: `make system-deps` installs them")
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
    node = shutil.which("node")
    if node is None:
        raise SystemExit("node is not installed: `make system-deps` installs it")
    port = free_port()
    # --headless: without it the gateway also serves its UI and keeps a live log of every
    # request for it, which cut its throughput by about half in a trial here.
    args = [node, str(PORTKEY_SERVER), f"--port={port}", "--headless"]
    child = children.start("portkey", args)
    child.wait_port(port, timeout=READY_TIMEOUT)
    return Server("portkey", port, child)


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
    child = children.start(name, args, env={"PROPAGATE_HEADERS": propagate})
    child.wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=READY_TIMEOUT)
    return Server(name, port, child)
