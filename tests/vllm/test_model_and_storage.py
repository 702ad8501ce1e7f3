"""The tiny model's build, its MLflow version and the storage initializer that places it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from nexus.errors import PlatformError
from nexus.local import vllm_model
from nexus.local.storage import StorageInitializer
from tests.support.processes import REPO
from tests.vllm.conftest import REVISION, Engine


def test_the_same_seed_builds_the_same_files(
    tmp_path: Path, vllm_env: Path, tiny_model: vllm_model.TinyModel
) -> None:
    again = vllm_model.build(vllm_env, REPO, tmp_path / "again")
    assert again.digests == tiny_model.digests
    assert set(again.digests) >= {"config.json", "model.safetensors", "tokenizer.json"}
    config = json.loads((again.folder / "config.json").read_text())
    # head_dim 64: vLLM's CPU attention refuses 16 ("Unsupported CPU attention configuration").
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert config["num_hidden_layers"] == 2


def test_registered_version_holds_the_files_and_serves_on_the_cpu_pool(
    vllm_engine: Engine, tiny_model: vllm_model.TinyModel
) -> None:
    version = vllm_engine.version
    uri = version.tags["serving.storage_uri"]
    assert uri == version.source
    assert uri.startswith("file://")
    assert version.tags["serving.gpu_pool"] == "cpu"
    assert version.tags["serving.runtime"] == "vllm"
    assert version.tags["serving.max_model_len"] == "512"
    assert {Path(p).name for p in vllm_engine.artifacts} >= set(tiny_model.digests)
    # What the engine loaded is what MLflow holds: the revision folder links to the artifacts.
    weights = vllm_engine.folder / "model.safetensors"
    assert weights.resolve() == Path(uri.removeprefix("file://")) / "model.safetensors"
    assert vllm_engine.folder.name == REVISION


def test_a_failed_download_names_the_uri_and_leaves_no_folder(
    tmp_path: Path, vllm_env: Path
) -> None:
    storage = StorageInitializer(python=vllm_env, root=tmp_path / "revisions")
    missing = f"file://{tmp_path / 'nowhere'}"
    with pytest.raises(PlatformError, match="storage initializer for m-predictor-00001 failed"):
        asyncio.run(storage.place(missing, "m-predictor-00001"))
    assert not storage.placed("m-predictor-00001")
    assert list((tmp_path / "revisions").iterdir()) == []


def test_a_placed_revision_is_not_downloaded_again(
    tmp_path: Path, vllm_env: Path, tiny_model: vllm_model.TinyModel
) -> None:
    storage = StorageInitializer(python=vllm_env, root=tmp_path / "revisions")
    folder = asyncio.run(storage.place(str(tiny_model.folder), "m-predictor-00002"))
    assert (folder / "config.json").is_symlink()
    # A second place() of a finished revision answers without running the initializer.
    storage.python = Path("/nonexistent/python")
    assert asyncio.run(storage.place(str(tiny_model.folder), "m-predictor-00002")) == folder
    storage.remove("m-predictor-00002")
    assert not folder.exists()
