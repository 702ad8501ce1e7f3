"""The tiny model real vLLM engines serve on a CPU: built from a seed, registered in MLflow.

``vllm/build_model.py`` (run with the vLLM environment's Python, which has torch and
transformers) writes a random-weight Llama (hidden 128, 2 heads, 2 layers, ~0.56 M
parameters) with a byte-level BPE tokenizer and a chat template. ``register`` logs its files
as the artifacts of an MLflow run and creates a model version whose ``serving.storage_uri``
is their URI and whose pool is ``cpu``: the same path a team's real model takes, so the
storage initializer downloads what MLflow holds.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nexus.errors import PlatformError
from nexus.registry import conventions as c
from nexus.registry.client import Registry, VersionInfo

NAME = "tiny-llama"
SEED = 0
MAX_MODEL_LEN = 512
BUILDER = Path("vllm/build_model.py")
BUILD_TIMEOUT = 300.0  # seconds; the build takes ~10 s, most of it importing torch


@dataclass(frozen=True, slots=True)
class TinyModel:
    folder: Path
    digests: dict[str, str]


def build(python: Path, project_dir: Path, out: Path, *, seed: int = SEED) -> TinyModel:
    """Build (or reuse, when ``out`` holds the same seed's build) the tiny model."""
    marker = out / "digests.json"
    seed_file = out / "seed"
    if marker.exists() and seed_file.exists() and seed_file.read_text().strip() == str(seed):
        return TinyModel(out, json.loads(marker.read_text()))
    try:
        done = subprocess.run(  # noqa: S603 - our interpreter and script
            [str(python), str(project_dir / BUILDER), "--out", str(out), "--seed", str(seed)],
            capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlatformError(f"building the tiny model with {python} failed: {exc}") from exc
    if done.returncode != 0:
        raise PlatformError(f"building the tiny model failed: {done.stderr.strip()[-800:]}")
    seed_file.write_text(f"{seed}\n")
    return TinyModel(out, json.loads(marker.read_text()))


def serving_tags() -> dict[str, str]:
    """The ``serving.*`` tags of the tiny model: vLLM runtime, ``cpu`` pool, its context."""
    return {
        c.SERVING_RUNTIME: "vllm",
        c.SERVING_GPU_POOL: "cpu",
        c.SERVING_MAX_MODEL_LEN: str(MAX_MODEL_LEN),
        c.SERVING_ARGS: json.dumps(["--enforce-eager", "--dtype=float32"]),
    }


def register(registry: Registry, model: TinyModel, *, name: str = NAME) -> VersionInfo:
    """A new version of ``name`` holding the model's files; its storage URI points at them."""
    tags = {**serving_tags(), "nexus.model_digest": _digest(model)}
    return registry.register_files(name, model.folder, tags)


def _digest(model: TinyModel) -> str:
    return str(model.digests.get("model.safetensors", ""))[:16]
