"""Weights sizing from model ids and vLLM args, and the versions file the rules read."""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.errors import ConfigError
from nexus.manifests import sizing
from nexus.manifests.versions import load_versions
from tests.manifests.conftest import REPO_ROOT

GIB = 2**30


@pytest.mark.parametrize(
    ("model_id", "parameters"),
    [
        ("hf://meta-llama/Llama-3.1-70B-Instruct", 70e9),
        ("hf://Qwen/Qwen2.5-1.5B-Instruct", 1.5e9),
        ("hf://mistralai/Mistral-7B-Instruct-v0.3", 7e9),
        ("hf://mistralai/Mixtral-8x7B-Instruct-v0.1", 56e9),
        ("s3://bucket/models/no-size-here", None),
    ],
)
def test_parameters_from_the_model_id(model_id: str, parameters: float | None) -> None:
    assert sizing.parameters_of(model_id) == parameters


def test_bytes_per_parameter_from_dtype_quantization_and_id() -> None:
    assert sizing.bytes_per_parameter(["--dtype=bfloat16"], "hf://a/b-7B") == 2
    assert sizing.bytes_per_parameter(["--dtype", "float32"], "hf://a/b-7B") == 4
    assert sizing.bytes_per_parameter(["--quantization=fp8"], "hf://a/b-7B") == 1
    assert sizing.bytes_per_parameter([], "hf://TheBloke/Llama-2-70B-AWQ") == 0.5


def test_a_70b_model_needs_four_80gb_gpus_at_090() -> None:
    args = ["--dtype=bfloat16", "--gpu-memory-utilization=0.90"]
    weights = sizing.weights_bytes(70e9, args, "hf://m/x-70B")
    assert round(weights / GIB, 1) == 130.4
    assert not sizing.fits(weights, 1, 80 * GIB, args)
    assert not sizing.fits(weights, 2, 80 * GIB, args)  # 144 GiB usable, 75 % = 108 GiB
    assert sizing.fits(weights, 4, 80 * GIB, args)
    assert sizing.gpus_needed(weights, 80 * GIB, args) == 4


def test_the_shipped_versions_file_loads() -> None:
    versions = load_versions(REPO_ROOT / "platform" / "versions.yaml")
    assert {"kserve", "knative_serving", "argocd", "vllm"} <= set(versions)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kserve: '0.21.0'\n", "no version for 'knative_serving'"),
        ("[1, 2]\n", "expected a mapping"),
        (
            "kserve: latest\nknative_serving: '1.21.1'\nargocd: '3.5.0'\nvllm: '0.24.0'\n",
            "not a version",
        ),
    ],
)
def test_a_bad_versions_file_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "versions.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_versions(path)
