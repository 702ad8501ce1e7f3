"""How a revision's vLLM engine is started: the ServingRuntime's own command, made local."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest

from nexus.errors import PlatformError, ResourceError
from nexus.local.storage import DONE, StorageInitializer
from nexus.local.vllm_engine import (
    CPU_ARGS,
    STOP_GRACE,
    Engines,
    engine_command,
    engine_env,
    runtime_container,
)
from tests.support.processes import REPO

PYTHON = Path("/venv/bin/python")
MODEL = Path("/state/models/revisions/chat-predictor-00001")


def test_the_runtime_command_runs_local_with_the_revision_folder_and_port() -> None:
    container = runtime_container(REPO)
    command = engine_command(container, python=PYTHON, model_dir=MODEL, name="chat",
                             port=4321, cpu=True)  # fmt: skip
    assert command[:3] == [str(PYTHON), "-m", "vllm.entrypoints.openai.api_server"]
    assert f"--model={MODEL}" in command  # /mnt/models, where the storage initializer wrote
    assert "--served-model-name=chat" in command  # {{.Name}} is the InferenceService name
    assert "--port=4321" in command
    assert "--port=8080" not in command
    assert "--host=127.0.0.1" in command
    # vLLM dropped the flag; passing it makes the server exit with a usage error.
    assert "--disable-log-requests" not in command
    assert all(arg in command for arg in CPU_ARGS)


def test_predictor_args_are_appended_and_win_over_the_cpu_defaults() -> None:
    container = runtime_container(REPO)
    command = engine_command(container, python=PYTHON, model_dir=MODEL, name="chat", port=1,
                             extra_args=["--max-model-len=256"], cpu=True)  # fmt: skip
    assert "--max-model-len=256" in command
    assert "--max-model-len=512" not in command
    gpu = engine_command(container, python=PYTHON, model_dir=MODEL, name="chat", port=1,
                         cpu=False)  # fmt: skip
    assert "--enforce-eager" not in gpu


def test_engine_env_is_the_runtime_env_plus_the_cpu_cache() -> None:
    container = runtime_container(REPO)
    assert engine_env(container, cpu=True)["VLLM_NO_USAGE_STATS"] == "1"
    assert engine_env(container, cpu=True)["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert engine_env(container, cpu=True)["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert "VLLM_CPU_KVCACHE_SPACE" not in engine_env(container, cpu=False)


def test_a_runtime_that_is_not_python_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ResourceError, match="python3 -m"):
        engine_command({"command": ["vllm", "serve"]}, python=PYTHON, model_dir=MODEL,
                       name="chat", port=1, cpu=True)  # fmt: skip
    with pytest.raises(ResourceError, match="cannot read the vLLM ServingRuntime"):
        runtime_container(tmp_path)


def test_a_revision_engine_waits_for_its_folder_probe_and_slow_exit(tmp_path: Path) -> None:
    storage = StorageInitializer(python=Path("/unused"), root=tmp_path)
    placed = storage.folder("chat-predictor-00001")
    placed.mkdir()
    (placed / DONE).touch()  # placed before: no initializer runs
    record = tmp_path / "tiny-llama.json"  # what `nexus up` writes once it registered it
    record.write_text('{"version": "1", "storage_uri": "file:///models/tiny"}')
    engines = Engines(REPO, storage, model_record=record)
    predictor = {"model": {"args": ["--max-model-len=128"]}}
    service = asyncio.run(
        engines.service("chat", predictor, revision="chat-predictor-00001", port=4321)
    )
    assert service.name == "chat-predictor-00001"
    assert f"--model={placed}" in service.args
    assert "--max-model-len=128" in service.args
    # The runtime's readiness probe, so the revision is not ready before the engine is.
    assert service.ready_url == "http://127.0.0.1:4321/v1/models"
    assert service.stop_grace == STOP_GRACE >= 30  # vLLM takes ~30 s after SIGTERM


def test_without_a_storage_uri_the_revision_fails_clearly(tmp_path: Path) -> None:
    engines = Engines(REPO, StorageInitializer(python=Path("/unused"), root=tmp_path))
    with pytest.raises(ResourceError, match="no storageUri"):
        asyncio.run(engines.service("chat", {}, revision="chat-predictor-00001", port=1))


@pytest.mark.parametrize(
    ("declared", "placed"),
    [("file:///mlflow/artifacts/1/abc/artifacts/model", "file:///mlflow/artifacts/1/abc/artifacts/model"),
     ("hf://Qwen/Qwen2.5-1.5B-Instruct", "file:///models/tiny")],
)  # fmt: skip
def test_a_file_storage_uri_is_served_as_it_is_a_remote_one_gets_the_tiny_model(
    tmp_path: Path, declared: str, placed: str
) -> None:
    """The initializer (here without kserve-storage, so it fails naming its URI) is given the
    predictor's own ``file://`` URI, what a local MLflow registers; only remote URIs are
    replaced by the model a CPU can serve."""
    storage = StorageInitializer(python=Path(sys.executable), root=tmp_path)
    record = tmp_path / "tiny-model.json"  # what `nexus up --predictor vllm` writes
    record.write_text(json.dumps({"storage_uri": "file:///models/tiny"}))
    engines = Engines(REPO, storage, model_record=record)
    predictor = {"model": {"storageUri": declared}}
    with pytest.raises(PlatformError, match=f"failed on {re.escape(placed)}: kserve-storage"):
        asyncio.run(engines.service("chat", predictor, revision="chat-predictor-00001", port=1))
