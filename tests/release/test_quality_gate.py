"""The quality gate's mechanics on CPU workers: an intact candidate passes, a garbled one is blocked.

Real processes only: two BentoML CPU workers (``bento/cpu_worker.py``) play the champion and
the candidate predictor; the evaluation set and the thresholds go into a real MLflow server
through ``nexus registry evaluation-set`` and come back through the registry; the verdict is
logged to a real MLflow run as a table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from nexus.cli.main import main
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.evaluation import Endpoint, EvaluationSet, score
from nexus.release.gate import (
    TABLE_FILE,
    GateThresholds,
    judge_candidate,
    log_verdict,
    report_section,
)
from tests.bento.conftest import Worker, cpu_worker
from tests.release.conftest import Mlflow

WORDS_ONLY = r"^[a-z]+( [a-z]+)*$"
EXAMPLES = {
    "examples": [
        {"id": "calm", "prompt": "the model answers every prompt",
         "reference": " with calm deterministic words", "max_tokens": 6,
         "checks": [{"regex": WORDS_ONLY}]},
        {"id": "stream", "prompt": "tests can predict each token",
         "reference": " while streaming stays realistic", "max_tokens": 4,
         "checks": [{"regex": WORDS_ONLY}, {"contains": ""}]},
        {"id": "vocab", "prompt": "drawn from a small",
         "reference": " vocabulary so that tests can predict", "max_tokens": 5},
    ]
}  # fmt: skip


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Worker, Worker]]:
    tmp = tmp_path_factory.mktemp("gate-workers")
    with cpu_worker(tmp, model="alpha") as champion, cpu_worker(tmp, model="alpha") as candidate:
        yield champion, candidate


def _endpoint(worker: Worker) -> Endpoint:
    return Endpoint(url=f"{worker.url}/v1", model=worker.model)


def _attach(tmp_path: Path, mlflow: Mlflow, name: str, *flags: str) -> Registry:
    MlflowClient(tracking_uri=mlflow.url).create_registered_model(name)
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(EXAMPLES))
    args = ["registry", "evaluation-set", name, str(path), "--tracking-uri", mlflow.url, *flags]
    assert main(args) == 0
    return Registry.connect(mlflow.url)


def test_intact_candidate_passes_and_garbled_one_is_blocked(
    tmp_path: Path, mlflow_server: Mlflow, workers: tuple[Worker, Worker]
) -> None:
    champion, candidate = workers
    registry = _attach(tmp_path, mlflow_server, "gate-cpu", "--max-logprob-drop", "1.0")
    text = registry.evaluation_set("gate-cpu")
    assert text is not None
    evaluation = EvaluationSet.loads(text)
    thresholds = GateThresholds.from_tags(registry.model_tags("gate-cpu"))
    assert thresholds.max_logprob_drop == 1.0

    intact = judge_candidate(candidate=_endpoint(candidate), champion=_endpoint(champion),
                             evaluation=evaluation, thresholds=thresholds)  # fmt: skip
    assert intact.passed, intact.reasons
    assert intact.metrics["logprob_drop"] == pytest.approx(0.0)
    assert intact.metrics["candidate_check_rate"] == 1.0
    assert [row["id"] for row in intact.rows] == ["calm", "stream", "vocab"]
    # The reference's tokens only: " with calm deterministic words" is four.
    assert intact.rows[0]["reference_tokens"] == 4

    candidate.set_faults(garble=True)
    try:
        broken = judge_candidate(candidate=_endpoint(candidate), champion=_endpoint(champion),
                                 evaluation=evaluation, thresholds=thresholds)  # fmt: skip
    finally:
        candidate.set_faults(garble=False)
    assert not broken.passed
    assert broken.metrics["logprob_drop"] > 7.0
    assert broken.metrics["candidate_check_rate"] == pytest.approx(1 / 3)  # "contains ''" only
    assert [r.split(":")[0] for r in broken.reasons] == ["likelihood", "checks"]
    section = report_section(broken)
    assert "**blocked** (exit status 4, outcome `blocked`)" in section
    assert "| calm |" in section

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.create_experiment("gate-cpu-release")
    run = client.create_run(experiment).info.run_id
    log_verdict(mlflow_server.url, run, broken)
    assert client.get_run(run).data.tags["gate.passed"] == "false"
    assert client.get_run(run).data.metrics["gate.logprob_drop"] > 7.0
    table = json.loads(Path(client.download_artifacts(run, TABLE_FILE, str(tmp_path))).read_text())
    assert table["columns"][0] == "id"
    assert [row[0] for row in table["data"]] == ["calm", "stream", "vocab"]


def test_a_candidate_that_cannot_answer_is_blocked_a_champion_that_cannot_is_an_error(
    workers: tuple[Worker, Worker],
) -> None:
    champion, candidate = workers
    evaluation = EvaluationSet.from_json(EXAMPLES)
    wrong = Endpoint(url=f"{candidate.url}/v1", model="not-served")
    verdict = judge_candidate(candidate=wrong, champion=_endpoint(champion),
                              evaluation=evaluation, thresholds=GateThresholds())  # fmt: skip
    assert not verdict.passed
    assert "answered 404" in verdict.reasons[0]
    from nexus.errors import ReleaseError

    with pytest.raises(ReleaseError, match="answered 404"):
        judge_candidate(candidate=_endpoint(candidate), champion=wrong,
                        evaluation=evaluation, thresholds=GateThresholds())  # fmt: skip


def test_without_a_champion_the_gate_measures_and_passes(workers: tuple[Worker, Worker]) -> None:
    _, candidate = workers
    evaluation = EvaluationSet.from_json(EXAMPLES)
    verdict = judge_candidate(candidate=_endpoint(candidate), champion=None,
                              evaluation=evaluation, thresholds=GateThresholds())  # fmt: skip
    assert verdict.passed
    assert "no champion" in verdict.reasons[0]
    assert -2.0 <= verdict.metrics["candidate_logprob"] <= -1.0
    one = score(_endpoint(candidate), evaluation.examples[0])
    assert len(one.answer.split()) == 6
    assert one.checks == (True,)


def test_too_few_examples_block(workers: tuple[Worker, Worker]) -> None:
    _, candidate = workers
    verdict = judge_candidate(candidate=_endpoint(candidate), champion=None,
                              evaluation=EvaluationSet.from_json(EXAMPLES),
                              thresholds=GateThresholds(min_examples=10))  # fmt: skip
    assert not verdict.passed
    assert "3 examples, quality.min_examples is 10" in verdict.reasons[0]


def test_bad_thresholds_and_sets_are_refused_before_any_write(
    tmp_path: Path, mlflow_server: Mlflow, capsys: pytest.CaptureFixture[str]
) -> None:
    MlflowClient(tracking_uri=mlflow_server.url).create_registered_model("gate-refused")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"examples": [{"prompt": "p", "reference": ""}]}))
    args = ["registry", "evaluation-set", "gate-refused", str(path),
            "--tracking-uri", mlflow_server.url]  # fmt: skip
    assert main(args) == 2
    assert "example 0: reference must be a non-empty string" in capsys.readouterr().err
    path.write_text(json.dumps(EXAMPLES))
    assert main([*args, "--max-check-drop", "-1"]) == 2
    assert "quality.max_check_drop='-1.0' must not be negative" in capsys.readouterr().err
    tags = Registry.connect(mlflow_server.url).model_tags("gate-refused")
    assert c.QUALITY_EVALUATION_SET not in tags
