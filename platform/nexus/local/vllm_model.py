"""The tiny model real vLLM engines serve on a CPU: built from a seed, registered in MLflow.

``vllm/build_model.py`` (run with the vLLM environment's Python, which has torch and
transformers) writes a Llama (hidden 128, 2 heads, 2 layers, ~0.56 M parameters) trained on
the standard library's documentation topics, with a byte-level BPE tokenizer, a chat
template, and beside it the quality gate's evaluation set from held-out topics. ``register``
logs its files as the artifacts of an MLflow run and creates a model version whose
``serving.storage_uri`` is their URI and whose pool is ``cpu``: the same path a team's real
model takes, so the storage initializer downloads what MLflow holds.
"""

from __future__ import annotations

import json
import shutil
import struct
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
# Seconds. The build trains the model: 400 steps took ~30 s of CPU on one thread; at load
# average 15-20 on two cores the wall time is several times that.
BUILD_TIMEOUT = 900.0
EVALUATION_FILE = "evaluation_set.json"  # written beside the model folder, not in it
WEIGHTS_FILE = "model.safetensors"
# The token embeddings; tied, so the output layer reads the same tensor (build_model.py).
EMBEDDINGS = "model.embed_tokens.weight"


@dataclass(frozen=True, slots=True)
class TinyModel:
    folder: Path
    digests: dict[str, str]

    @property
    def evaluation(self) -> Path:
        """The quality gate's evaluation set, from text the model was not trained on."""
        return self.folder.with_name(EVALUATION_FILE)


def build(python: Path, project_dir: Path, out: Path, *, seed: int = SEED) -> TinyModel:
    """Build (or reuse, when ``out`` holds the same seed's build) the tiny model."""
    marker = out / "digests.json"
    seed_file = out / "seed"
    found = TinyModel(out, {})
    if (marker.exists() and seed_file.exists() and found.evaluation.exists()
            and seed_file.read_text().strip() == str(seed)):  # fmt: skip
        return TinyModel(out, json.loads(marker.read_text()))
    try:
        done = subprocess.run(  # noqa: S603 - our interpreter and script
            [str(python), str(project_dir / BUILDER), "--out", str(out), "--seed", str(seed),
             "--evaluation-out", str(found.evaluation)],
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
    """A new version of ``name`` holding the model's files; its storage URI points at them.

    The evaluation set the build made from held-out text is attached to the registered
    model, so the quality gate can judge the next version against this one.
    """
    tags = {**serving_tags(), "nexus.model_digest": _digest(model)}
    version = registry.register_files(name, model.folder, tags)
    registry.attach_evaluation_set(name, model.evaluation.read_text(encoding="utf-8"))
    return version


def _digest(model: TinyModel) -> str:
    return str(model.digests.get(WEIGHTS_FILE, ""))[:16]


def zeroed_copy(model: TinyModel, out: Path, *, tensor: str = EMBEDDINGS) -> Path:
    """A broken release of ``model``: a copy of its folder with one tensor set to zeros.

    With the embeddings zeroed every logit is 0, so every token costs ln(vocabulary): the
    model answers fast and with 200, and only its likelihood shows it is broken. The
    safetensors layout is the format's own: an 8-byte little-endian header length, a JSON
    header giving each tensor's ``data_offsets`` within the data that follows.
    """
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(model.folder, out)
    weights = out / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    (size,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8 : 8 + size])[tensor]["data_offsets"]
    start = 8 + size
    raw[start + begin : start + end] = bytes(end - begin)
    weights.write_bytes(bytes(raw))
    return out
