"""The quality gate on real vLLM, through ``nexus release``: zeroed embeddings never get traffic.

Everything is the local platform's own: a real MLflow, a bare GitOps repository, the local
controller with ``--predictor vllm`` turning each commit into a revision whose storage
initializer places the registered files and whose vLLM engine serves them, its front (with
KServe's ``latest``/``prev`` tag hosts) and Prometheus. Each version is registered from an
MLflow artifact URI (``Registry.register_files``): the files served are exactly those. The
evaluation set is the one the build wrote from held-out text, attached to the registered
model with ``nexus registry evaluation-set``.

1. Version 1, the intact model, is the first release: no champion, straight to 100 %.
2. Version 2, a copy with zeroed embeddings (``vllm_model.zeroed_copy``), runs dark at 0 %;
   the gate reads vLLM's ``prompt_logprobs`` through the candidate's and the champion's tag
   hosts, blocks it (exit status 4, outcome ``blocked``), and the revert is committed: Git
   never holds more than 0 % for it.
3. Version 3, an intact copy, passes the gate, takes its 50 % step under live traffic,
   judged on vLLM's own time-to-first-token histogram by revision, and is promoted.

Three engine starts (~75 s each at low load, minutes at load average 15-35): the longest
test of the tier.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from nexus.cli import main
from nexus.local import vllm_model
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.gate import EXIT_BLOCKED, OUTCOME_BLOCKED
from nexus.release.tracking import Tracking
from tests.release.conftest import API_KEY, git, local_platform_at
from tests.release.test_gated_release import percents_since
from tests.release.test_stepped import subjects
from tests.support.mlflow import mlflow_server
from tests.support.traffic import Traffic
from tests.vllm.conftest import ENGINE_START_TIMEOUT

MODEL = "gated-llama"  # the InferenceService's name, which vLLM serves the model as
UNIFORM = -6.931  # ln(1/1024): every token of the 1,024-token vocabulary equally likely


def gate_of(tracking_uri: str, version: str) -> dict[str, Any]:
    """The 0 % stage of the version's release run, as its analysis recorded it."""
    tracking = Tracking.connect(tracking_uri)
    run = tracking.linked(MODEL, version)
    assert run is not None
    stage: dict[str, Any] = tracking.analysis(run)["steps"][0]
    assert stage["percent"] == 0
    return stage


@pytest.mark.timeout(3600)
def test_zeroed_embeddings_are_blocked_at_zero_and_the_intact_copy_is_promoted(
    tmp_path: Path, vllm_env: Path, tiny_model: vllm_model.TinyModel,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    repo = tmp_path / "gitops.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(repo))
    with (
        mlflow_server(tmp_path, timeout=180) as url,
        local_platform_at(tmp_path, repo, "--predictor", "vllm") as platform,
    ):
        registry = Registry.connect(url)

        def register(folder: Path) -> str:
            version = registry.register_files(MODEL, folder, vllm_model.serving_tags())
            assert version.tags[c.SERVING_STORAGE_URI].startswith("file://")
            return version.version

        def release(version: str, *, steps: str) -> int:
            return main(["release", MODEL, "--version", version, "--inline",
                         *(["--steps", steps] if steps else []),
                         "--environment", "local", "--state-dir", str(tmp_path / "runs"),
                         "--tracking-uri", url, "--gitops-repo", str(repo),
                         "--prometheus-url", platform.prometheus_url,
                         "--status-url", platform.status_url,
                         "--analysis-window", "20", "--min-canary-requests", "5",
                         "--max-error-ratio", "0.05", "--max-p95-latency-ratio", "3.0",
                         "--wait-timeout", str(ENGINE_START_TIMEOUT + 120)])  # fmt: skip

        # 1. The intact model is the champion.
        v1 = register(tiny_model.folder)
        assert main(["registry", "evaluation-set", MODEL, str(tiny_model.evaluation),
                     "--tracking-uri", url]) == 0  # fmt: skip
        assert release(v1, steps="") == 0, capsys.readouterr().out
        assert registry.alias(MODEL, c.CHAMPION) == v1
        capsys.readouterr()

        # 2. Zeroed embeddings: blocked at 0 %, reverted, never more than 0 % in Git.
        v2 = register(vllm_model.zeroed_copy(tiny_model, tmp_path / "zeroed"))
        code = release(v2, steps="50,100")
        out = capsys.readouterr().out
        assert code == EXIT_BLOCKED, out
        assert f"{MODEL} version {v2}: {OUTCOME_BLOCKED}" in out
        assert subjects(repo)[:2] == [
            f"Roll back {MODEL} version {v2} in local",
            f"Canary {MODEL} version {v2} in local at 0 %",
        ]
        assert percents_since(repo, f"Release {MODEL} version {v1} in local", MODEL) == [0, 0]
        assert registry.version(MODEL, v2).tags[c.RELEASE_STATUS] == OUTCOME_BLOCKED
        assert registry.alias(MODEL, c.CHAMPION) == v1
        gate = gate_of(url, v2)["gate"]
        assert gate["passed"] is False
        # All logits are 0 without embeddings: every reference token costs ln(1024), while
        # the trained champion does clearly better on the held-out text.
        assert gate["metrics"]["candidate_logprob"] == pytest.approx(UNIFORM, abs=0.01)
        assert gate["metrics"]["champion_logprob"] > -6.0
        assert gate["reasons"][0].startswith("likelihood:")
        report = Path(out.split("\nreport: ", 1)[1].split("\n", 1)[0]).read_text()
        print(report)  # the blocked release's report, for the README's example

        # 3. An intact copy, registered the same way: passes the gate, steps to promotion.
        intact = tmp_path / "intact"
        shutil.copytree(tiny_model.folder, intact)
        v3 = register(intact)
        chat = f"{platform.front(MODEL)}/v1/chat/completions"
        with Traffic(chat, headers={"Authorization": f"Bearer {API_KEY}"}, model=MODEL,
                     interval=0.1) as traffic:  # fmt: skip
            code = release(v3, steps="50,100")
        out = capsys.readouterr().out
        assert code == 0, out
        assert traffic.statuses[200] > 0, traffic.statuses
        assert subjects(repo)[:3] == [
            f"Promote {MODEL} version {v3} in local",
            f"Canary {MODEL} version {v3} in local at 50 %",
            f"Canary {MODEL} version {v3} in local at 0 %",
        ]
        assert registry.alias(MODEL, c.CHAMPION) == v3
        passed = gate_of(url, v3)["gate"]
        assert passed["passed"] is True
        assert passed["metrics"]["logprob_drop"] == pytest.approx(0.0, abs=1e-3)
        run = Tracking.connect(url).linked(MODEL, v3)
        assert run is not None
        data = MlflowClient(tracking_uri=url).get_run(run.run_id).data
        assert data.tags["gate.passed"] == "true"
        print(json.dumps(passed["metrics"], indent=2))
