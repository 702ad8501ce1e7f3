"""The quality gate as every release's 0 % stage, on the local platform.

Real processes, as in ``test_stepped.py``: MLflow (the evaluation set attached with
``nexus registry evaluation-set``), a bare GitOps repository, the local controller turning
commits into revisions (CPU worker + transformer) behind a front, and its Prometheus. A
garbled candidate (the CPU worker's ``garble`` fault: garbage answers, unlikely reference
tokens) is blocked at 0 % with exit status 4 and outcome ``blocked``, and Git never holds
more than 0 % for it; an intact one passes the gate and steps through to the promotion.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from nexus.cli import main
from nexus.errors import ReleaseError
from nexus.manifests.pools import load_pools
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.analyze import Analysis
from nexus.release.canary import stages
from nexus.release.gate import EXIT_BLOCKED, OUTCOME_BLOCKED, TABLE_FILE, GateVerdict
from nexus.release.gate_stage import GATE_KEY, endpoints, verdict_from, verdict_json
from nexus.release.plan import ReleasePlan
from nexus.release.resolve import default_pools_file
from nexus.release.run import run_inline
from nexus.release.tag_routing import ANNOTATION
from nexus.release.tracking import Tracking
from nexus.release.wait import Rollout
from tests.release.conftest import API_KEY, LocalPlatform, Mlflow, git
from tests.release.test_quality_gate import EXAMPLES
from tests.release.test_stepped import WhenCommitted, subjects
from tests.release.test_stepped import arguments as stepped_arguments
from tests.support.traffic import Traffic

# Its own model: MLflow lives for the whole session, test_stepped's model must stay ungated.
MODEL = "gated"
PATH = f"inference_services/local/inferenceservice.{MODEL}.yaml"


def manifest(repo: Path, rev: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(git("--git-dir", str(repo), "show", f"{rev}:{PATH}"))
    return doc


def judged(mlflow: Mlflow, version: str) -> dict[str, Any]:
    tracking = Tracking.connect(mlflow.url)
    run = tracking.linked(MODEL, version)
    assert run is not None
    return tracking.analysis(run)


def arguments(version: str, mlflow: Mlflow, repo: Path, platform: LocalPlatform, *,
              steps: str) -> dict[str, Any]:  # fmt: skip
    return {**stepped_arguments(version, mlflow, repo, platform, steps=steps),
            "model_name": MODEL}  # fmt: skip


def revision(n: int) -> str:
    return f"{MODEL}-predictor-{n:05d}"


def release(version: str, mlflow: Mlflow, repo: Path, platform: LocalPlatform, state: Path,
            *, steps: str) -> int:  # fmt: skip
    args = arguments(version, mlflow, repo, platform, steps=steps)
    return main(["release", MODEL, "--version", version, "--inline", "--steps", steps,
                 "--environment", "local", "--state-dir", str(state),
                 "--tracking-uri", mlflow.url, "--gitops-repo", str(repo),
                 "--prometheus-url", platform.prometheus_url,
                 "--status-url", platform.status_url,
                 "--analysis-window", str(args["analysis_window_s"]),
                 "--max-error-ratio", "0.05", "--max-p95-latency-ratio", "2.0",
                 "--min-canary-requests", "5", "--wait-timeout", "120"])  # fmt: skip


def percents_since(repo: Path, subject: str) -> list[Any]:
    """``canaryTrafficPercent`` of every commit after the one whose subject is ``subject``."""
    revs = git("--git-dir", str(repo), "log", "--format=%H %s", "main").splitlines()
    found: list[Any] = []
    for line in revs:
        sha, title = line.split(" ", 1)
        if title == subject:
            return found
        found.append(manifest(repo, sha)["spec"]["predictor"].get("canaryTrafficPercent"))
    raise AssertionError(f"no commit {subject!r}")


@pytest.mark.timeout(900)
def test_a_garbled_candidate_is_blocked_at_zero_an_intact_one_is_promoted(
    mlflow_server: Mlflow, gitops_repo: Path, local_platform: LocalPlatform, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    registry = Registry.connect(mlflow_server.url)
    registered: list[str] = []

    def register() -> str:
        registered.append(f"hf://acme/gated-v{len(registered) + 1}")
        spec = c.ServingSpec(storage_uri=registered[-1], runtime="vllm", gpu_pool="a100")
        return registry.register(MODEL, spec, load_pools(default_pools_file())).version

    v1 = register()
    evaluation = tmp_path / "evaluation.json"
    evaluation.write_text(json.dumps(EXAMPLES))
    assert main(["registry", "evaluation-set", MODEL, str(evaluation),
                 "--tracking-uri", mlflow_server.url, "--max-logprob-drop", "1.0"]) == 0  # fmt: skip
    # A first release has no champion to compare with: straight to 100 %, no gate.
    assert run_inline(arguments(v1, mlflow_server, gitops_repo, local_platform, steps="")) == (
        "promoted"
    )
    state = tmp_path / "state"
    state.mkdir()
    capsys.readouterr()

    # 1. Garbled: its worker answers like a broken model from the moment it is up (the
    #    thread wins the race with the release, which polls the status once a second).
    v2 = register()

    def garble() -> None:
        deadline = time.monotonic() + 60
        while (url := local_platform.worker_url(revision(2))) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        httpx.post(f"{url}/admin/faults", json={"garble": True}).raise_for_status()

    with WhenCommitted(gitops_repo, "at 0 %", garble) as garbled:
        code = release(v2, mlflow_server, gitops_repo, local_platform, state, steps="50,100")
    out = capsys.readouterr().out
    assert garbled.done
    assert code == EXIT_BLOCKED, out
    assert f"{MODEL} version {v2}: {OUTCOME_BLOCKED}" in out
    assert subjects(gitops_repo)[:2] == [
        f"Roll back {MODEL} version {v2} in local",
        f"Canary {MODEL} version {v2} in local at 0 %",
    ]
    # Nothing above 0 % was ever committed for the candidate.
    assert percents_since(gitops_repo, f"Release {MODEL} version {v1} in local") == [0, 0]
    assert manifest(gitops_repo, "main~1")["metadata"]["annotations"][ANNOTATION] == "true"
    tags = registry.version(MODEL, v2).tags
    assert tags[c.RELEASE_STATUS] == OUTCOME_BLOCKED
    assert tags[c.RELEASE_ANALYSIS].startswith("blocked: quality gate: likelihood:")
    assert registry.alias(MODEL, c.CHAMPION) == v1
    assert registry.alias(MODEL, c.CHALLENGER) is None
    # The evidence: the report's gate section, the verdict's metrics and table in the run.
    report = Path(out.split("\nreport: ", 1)[1].split("\n", 1)[0]).read_text()
    assert "## Quality gate at 0 %" in report
    assert "**blocked** (exit status 4, outcome `blocked`)" in report
    run = Tracking.connect(mlflow_server.url).linked(MODEL, v2)
    assert run is not None
    client = MlflowClient(tracking_uri=mlflow_server.url)
    data = client.get_run(run.run_id).data
    assert data.tags["gate.passed"] == "false"
    assert data.metrics["gate.logprob_drop"] > 7.0
    table = json.loads(
        Path(client.download_artifacts(run.run_id, TABLE_FILE, str(tmp_path))).read_text()
    )
    assert [row[0] for row in table["data"]] == ["calm", "stream", "vocab"]

    # 2. Intact: passes the gate at 0 %, then takes its 50 % step with live traffic.
    v3 = register()
    chat = f"{local_platform.front(MODEL)}/v1/chat/completions"
    with Traffic(chat, headers={"Authorization": f"Bearer {API_KEY}"}, model=MODEL,
                 interval=0.1):  # fmt: skip
        code = release(v3, mlflow_server, gitops_repo, local_platform, state, steps="50,100")
    out = capsys.readouterr().out
    assert code == 0, out
    assert subjects(gitops_repo)[:3] == [
        f"Promote {MODEL} version {v3} in local",
        f"Canary {MODEL} version {v3} in local at 50 %",
        f"Canary {MODEL} version {v3} in local at 0 %",
    ]
    assert registry.alias(MODEL, c.CHAMPION) == v3
    gate, step = judged(mlflow_server, v3)["steps"]
    assert (gate["percent"], gate["decision"]) == (0, "promote")
    assert gate["gate"]["metrics"]["logprob_drop"] == pytest.approx(0.0)
    assert gate["revision"] == revision(3)
    assert (step["percent"], step["decision"]) == (50, "promote")
    assert registry.version(MODEL, v3).tags[c.RELEASE_ANALYSIS] == (
        "promote: quality gate at 0 % passed; canary within every threshold at 50 %"
    )


def _plan(**changes: Any) -> ReleasePlan:
    base = ReleasePlan(model="m", version="2", environment="prod", storage_uri="hf://a/m",
                       runtime="vllm", pool="a100", champion="1", canary_steps=(20, 50, 100))  # fmt: skip
    return dataclasses.replace(base, **changes)


def test_the_gate_is_a_stage_at_zero_only_when_the_model_has_an_evaluation_set() -> None:
    def traffic(plan: ReleasePlan, rollout: Rollout) -> Analysis:
        return Analysis("promote", (), 1.0)

    def gate(plan: ReleasePlan, rollout: Rollout) -> Analysis:
        return Analysis("blocked", (), 0.0)

    assert [p for p, _ in stages(_plan(), traffic=traffic, gate=gate)] == [20, 50]
    gated = stages(_plan(quality_gate=True), traffic=traffic, gate=gate)
    assert [(p, j) for p, j in gated] == [(0, gate), (20, traffic), (50, traffic)]


def test_the_gate_reaches_tag_hosts_in_a_cluster_and_through_the_front_locally() -> None:
    cluster, champion = endpoints("https://kubernetes.default.svc", _plan(), "")
    assert cluster.url == "http://latest-m-predictor.nexus.svc.cluster.local/v1"
    assert champion is not None
    assert champion.url == "http://prev-m-predictor.nexus.svc.cluster.local/v1"
    local, _ = endpoints("http://127.0.0.1:9", _plan(runtime="huggingface"), "http://127.0.0.1:8")
    assert (local.url, local.host) == (
        "http://127.0.0.1:8/openai/v1",
        "latest-m-predictor.nexus.svc.cluster.local",
    )
    assert endpoints("", _plan(champion=None), "")[1] is None
    with pytest.raises(ReleaseError, match=r"no status\.url"):
        endpoints("http://127.0.0.1:9", _plan(), "")


def test_the_verdict_survives_the_summary_with_its_column_order() -> None:
    verdict = GateVerdict(False, ("likelihood: ...",), {"logprob_drop": 2.4},
                          ({"id": "a", "prompt": "p", "delta": -2.4},))  # fmt: skip
    summary = json.loads(json.dumps({"steps": [{GATE_KEY: verdict_json(verdict)}]}, sort_keys=True))
    back = verdict_from(summary)
    assert back == verdict
    assert back is not None
    assert list(back.rows[0]) == ["id", "prompt", "delta"]
