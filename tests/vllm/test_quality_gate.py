"""The quality gate on real vLLM: a copy with zeroed embeddings is blocked, the intact copy passes.

The champion is the tier's engine (the trained tiny Llama). Each candidate is a folder
registered in a real MLflow as the artifacts of a run (``Registry.register_files``): its
``serving.storage_uri`` is the MLflow artifact URI, KServe's storage library places exactly
those files in the revision's folder, and a second vLLM engine serves them, as a revision
does. The evaluation set is the one the build wrote from held-out text, attached to the
registered model in MLflow and read back from there. At most two engines run at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus.local import vllm_model
from nexus.local.storage import StorageInitializer
from nexus.registry.client import Registry
from nexus.release.evaluation import Endpoint, EvaluationSet, score
from nexus.release.gate import GateThresholds, judge_candidate, report_section
from tests.support.mlflow import mlflow_server
from tests.vllm.conftest import MODEL, Engine, engine_process

EMBEDDINGS = "model.embed_tokens.weight"  # tied: the output layer reads the same tensor


def zero_tensor(weights: Path, name: str) -> None:
    """Overwrite one tensor of a safetensors file with zeros (the format's own layout:
    an 8-byte little-endian header length, a JSON header with ``data_offsets``, the data)."""
    raw = bytearray(weights.read_bytes())
    (size,) = struct.unpack("<Q", raw[:8])
    begin, end = json.loads(raw[8 : 8 + size])[name]["data_offsets"]
    start = 8 + size
    raw[start + begin : start + end] = bytes(end - begin)
    weights.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("gate-mlflow")
    with mlflow_server(tmp, timeout=180) as url:
        yield Registry.connect(url)


@contextlib.contextmanager
def candidate(
    tmp: Path, vllm_env: Path, registry: Registry, folder: Path, name: str
) -> Iterator[Endpoint]:
    """Register ``folder`` from an MLflow artifact URI, place it, serve it with vLLM."""
    version = registry.register_files(name, folder, vllm_model.serving_tags())
    uri = version.tags["serving.storage_uri"]
    assert uri.startswith("file://")
    assert uri == version.source
    storage = StorageInitializer(python=vllm_env, root=tmp / "revisions")
    placed = asyncio.run(storage.place(uri, f"{name}-predictor-00001"))
    artifact = Path(uri.removeprefix("file://")) / "model.safetensors"
    assert (placed / "model.safetensors").resolve() == artifact
    with engine_process(vllm_env, placed, log=tmp / f"{name}.log") as (port, _, _):
        yield Endpoint(url=f"http://127.0.0.1:{port}/v1", model=MODEL)


# Two engine starts in a row (~75 s each at low load, minutes at load average 15-35).
@pytest.mark.timeout(1800)
def test_zeroed_embeddings_are_blocked_and_the_intact_copy_passes(
    tmp_path: Path,
    vllm_env: Path,
    vllm_engine: Engine,
    tiny_model: vllm_model.TinyModel,
    registry: Registry,
) -> None:
    registry.register_files("tiny", tiny_model.folder, vllm_model.serving_tags())
    registry.attach_evaluation_set("tiny", tiny_model.evaluation.read_text())
    text = registry.evaluation_set("tiny")
    assert text is not None
    evaluation = EvaluationSet.loads(text)
    assert len(evaluation.examples) >= 10
    thresholds = GateThresholds.from_tags(registry.model_tags("tiny"))
    champion = Endpoint(url=f"{vllm_engine.url}/v1", model=MODEL)

    # vLLM's prompt_logprobs, read as the gate reads them: the reference's tokens only, and a
    # trained model beats the uniform guess over its 1,024 tokens (ln 1024 = 6.93 nats).
    first = score(champion, evaluation.examples[0])
    assert 2 <= len(first.token_logprobs) <= 16
    assert first.mean_logprob > -6.0

    zeroed = tmp_path / "zeroed"
    shutil.copytree(tiny_model.folder, zeroed)
    zero_tensor(zeroed / "model.safetensors", EMBEDDINGS)
    with candidate(tmp_path, vllm_env, registry, zeroed, "tiny-zeroed") as endpoint:
        broken = judge_candidate(candidate=endpoint, champion=champion,
                                 evaluation=evaluation, thresholds=thresholds)  # fmt: skip
    assert not broken.passed, broken.reasons
    # All logits are 0 without embeddings: every token costs ln(1024).
    assert broken.metrics["candidate_logprob"] == pytest.approx(-6.931, abs=0.01)
    assert broken.metrics["logprob_drop"] > 1.0
    assert broken.reasons[0].startswith("likelihood:")
    print(report_section(broken))

    intact = tmp_path / "intact"
    shutil.copytree(tiny_model.folder, intact)
    with candidate(tmp_path, vllm_env, registry, intact, "tiny-intact") as endpoint:
        good = judge_candidate(candidate=endpoint, champion=champion,
                               evaluation=evaluation, thresholds=thresholds)  # fmt: skip
    assert good.passed, good.reasons
    assert good.metrics["logprob_drop"] == pytest.approx(0.0, abs=1e-3)
    assert good.metrics["candidate_check_rate"] == good.metrics["champion_check_rate"]
    print(report_section(good))
