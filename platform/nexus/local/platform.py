"""``nexus up`` / ``status`` / ``down``: the platform's processes on one machine.

Today the local platform runs the data plane of one InferenceService: the vLLM-shaped
CPU predictor, our transformer in front of it (started with KServe's own flags), and a
private ``redis-server`` for the rate limiter when one is installed.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nexus.local.supervisor import PlatformError, Service, Supervisor, python

__all__ = ["PlatformError", "Ports", "down", "status", "up"]

Progress = Callable[[str], None]
MODEL = "chat"


@dataclass(frozen=True, slots=True)
class Ports:
    transformer: int = 8080
    predictor: int = 9000
    redis: int = 6390


def demo_key(state_dir: Path) -> str:
    """The demo API key, made once and kept (mode 0600) so restarts keep working clients."""
    path = state_dir / "demo-api-key"
    if path.exists():
        return path.read_text().strip()
    state_dir.mkdir(parents=True, exist_ok=True)
    key = "nexus-demo-" + secrets.token_urlsafe(18)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def up(state_dir: Path, ports: Ports, *, progress: Progress) -> dict[str, str]:
    """Start everything; on any failure stop what was started and raise ``PlatformError``."""
    supervisor = Supervisor(state_dir)
    if supervisor.running():
        raise PlatformError(
            f"the platform is already running ({', '.join(supervisor.running())}); "
            "`nexus status` shows it, `nexus down` stops it"
        )
    key = demo_key(state_dir)
    env = {"GATEWAY_API_KEYS": key}
    try:
        if shutil.which("redis-server"):
            progress(f"starting redis-server on :{ports.redis} (shared rate-limit state)")
            data = state_dir / "redis"
            data.mkdir(parents=True, exist_ok=True)
            supervisor.start(
                Service(
                    "redis",
                    [
                        "redis-server",
                        "--port",
                        str(ports.redis),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(data),
                    ],
                    ports.redis,
                )
            )
            env["GATEWAY_REDIS_URL"] = f"redis://127.0.0.1:{ports.redis}/0"
        else:
            progress("redis-server not found: the transformer limits in-process (one replica)")
        progress(f"starting the CPU predictor on :{ports.predictor}")
        supervisor.start(
            Service(
                "predictor-chat",
                python(
                    "nexus.local.cpu_llm",
                    "--port",
                    str(ports.predictor),
                    "--model",
                    MODEL,
                    "--token-latency-ms",
                    "5",
                ),
                ports.predictor,
                ready_url=f"http://127.0.0.1:{ports.predictor}/health",
            )
        )
        progress(f"starting the transformer on :{ports.transformer}")
        supervisor.start(
            Service(
                "transformer-chat",
                python(
                    "nexus.transformer",
                    "--model_name",
                    MODEL,
                    "--predictor_host",
                    f"127.0.0.1:{ports.predictor}",
                    "--http_port",
                    str(ports.transformer),
                ),
                ports.transformer,
                ready_url=f"http://127.0.0.1:{ports.transformer}/v2/health/ready",
                env=env,
            )
        )
    except PlatformError:
        supervisor.stop_all()
        raise
    return {
        "openai": f"http://127.0.0.1:{ports.transformer}/v1",
        "kserve_v2": f"http://127.0.0.1:{ports.transformer}/v2/models/{MODEL}/infer",
        "metrics": f"http://127.0.0.1:{ports.transformer}/metrics",
        "api_key": key,
        "model": MODEL,
        "logs": str(state_dir / "logs"),
    }


def status(state_dir: Path) -> dict[str, int | None]:
    supervisor = Supervisor(state_dir)
    return {name: supervisor.pid_of(name) for name in supervisor.running()}


def down(state_dir: Path) -> list[str]:
    return Supervisor(state_dir).stop_all()
