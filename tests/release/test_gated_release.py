"""The quality gate as every release's 0 % stage, on the local platform.

Real processes, as in ``test_stepped.py``: MLflow (the evaluation set attached with
``nexus registry evaluation-set``), a bare GitOps repository, the local controller turning
commits into revisions (CPU worker + transformer) behind a front, and its Prometheus. A
garbled candidate (the CPU worker's ``garble`` fault: garbage answers, unlikely reference
tokens) is blocked at 0 % with exit status 4 and outcome ``blocked``, and Git never holds
more than 0 % for it; an intact one passes the gate and steps through to the promotion.
Those run inline (``--inline``); a garbled candidate is blocked once more through the KFP
graph in ``kfp.local`` (the canary task's decision taking the ``dsl.Else`` branch, the exit
handler after it), for a model of its own.
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
from tests.release.test_judge import loopback_server
from tests.release.test_quality_gate import EXAMPLES
from tests.release.test_stepped import WhenCommitted, subjects
from tests.release.test_stepped import arguments as stepped_arguments
from tests.support.traffic import Traffic

# Its own model: MLflow lives for the whole session, test_stepped's model must stay ungated.
MODEL = "gated"
# The kfp.local run's model: a champion of its own, whatever order the tests run in.
KFP_MODEL = "gated-kfp"


def manifest(repo: Path, rev: str, model: str = MODEL) -> dict[str, Any]:
    path = f"inference_services/local/inferenceservice.{model}.yaml"
    doc: dict[str, Any] = yaml.safe_load(git("--git-dir", str(repo), "show", f"{rev}:{path}"))
    return doc


def judged(mlflow: Mlflow, version: str) -> dict[str, Any]:
    tracking = Tracking.connect(mlflow.url)
    run = tracking.linked(MODEL, version)
    assert run is not None
    return tracking.analysis(run)


def arguments(version: str, mlflow: Mlflow, repo: Path, platform: LocalPlatform, *,
              steps: str, model: str = MODEL) -> dict[str, Any]:  # fmt: skip
    return {**stepped_arguments(version, mlflow, repo, platform, steps=steps),
            "model_name": model}  # fmt: skip


def revision(n: int, model: str = MODEL) -> str:
    return f"{model}-predictor-{n:05d}"


def release(version: str, mlflow: Mlflow, repo: Path, platform: LocalPlatform, state: Path,
            *, steps: str, model: str = MODEL, inline: bool = True) -> int:  # fmt: skip
    """``nexus release``: inline, or through the KFP pipeline in ``kfp.local``."""
    args = arguments(version, mlflow, repo, platform, steps=steps)
    return main(["release", model, "--version", version, *(["--inline"] if inline else []),
                 "--steps", steps, "--environment", "local", "--state-dir", str(state),
                 "--tracking-uri", mlflow.url, "--gitops-repo", str(repo),
                 "--prometheus-url", platform.prometheus_url,
                 "--status-url", platform.status_url,
                 "--analysis-window", str(args["analysis_window_s"]),
                 "--max-error-ratio", "0.05", "--max-p95-latency-ratio", "2.0",
                 "--min-canary-requests", "5", "--wait-timeout", "120"])  # fmt: skip


def percents_since(repo: Path, subject: str, model: str = MODEL) -> list[Any]:
    """``canaryTrafficPercent`` of every commit after the one whose subject is ``subject``."""
    revs = git("--git-dir", str(repo), "log", "--format=%H %s", "main").splitlines()
    found: list[Any] = []
    for line in revs:
        sha, title = line.split(" ", 1)
        if title == subject:
            return found
        found.append(manifest(repo, sha, model)["spec"]["predictor"].get("canaryTrafficPercent"))
    raise AssertionError(f"no commit {subject!r}")


class Gated:
    """A model with an evaluation set and a champion (version 1, released inline)."""

    def __init__(self, model: str, mlflow: Mlflow, repo: Path, platform: LocalPlatform,
                 tmp_path: Path) -> None:  # fmt: skip
        self.model, self.mlflow, self.repo, self.platform = model, mlflow, repo, platform
        self.registry = Registry.connect(mlflow.url)
        self.state = tmp_path / "state"  # `nexus release --state-dir`
        self.state.mkdir()
        self._registered = 0
        self.champion = self.register()
        evaluation = tmp_path / f"evaluation-{model}.json"
        evaluation.write_text(json.dumps(EXAMPLES))
        assert main(["registry", "evaluation-set", model, str(evaluation),
                     "--tracking-uri", mlflow.url, "--max-logprob-drop", "1.0"]) == 0  # fmt: skip
        # A first release has no champion to compare with: straight to 100 %, no gate.
        first = arguments(self.champion, mlflow, repo, platform, steps="", model=model)
        assert run_inline(first) == "promoted"

    def register(self) -> str:
        self._registered += 1
        uri = f"hf://acme/{self.model}-v{self._registered}"
        spec = c.ServingSpec(storage_uri=uri, runtime="vllm", gpu_pool="a100")
        return self.registry.register(self.model, spec, load_pools(default_pools_file())).version

    def release_garbled(self, capsys: pytest.CaptureFixture[str], *,
                        inline: bool) -> tuple[str, str]:  # fmt: skip
        """A new version whose worker answers like a broken model from the moment it is up
        (the thread wins the race with the release, which polls the status once a second),
        blocked at 0 %: the version and the command's output."""
        version, model = self.register(), self.model
        number = int(version)

        def garble() -> None:
            deadline = time.monotonic() + 60
            while (url := self.platform.worker_url(revision(number, model))) is None:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            httpx.post(f"{url}/admin/faults", json={"garble": True}).raise_for_status()

        capsys.readouterr()
        with WhenCommitted(self.repo, "at 0 %", garble) as garbled:
            code = release(version, self.mlflow, self.repo, self.platform, self.state,
                           steps="50,100", model=model, inline=inline)  # fmt: skip
        out = capsys.readouterr().out
        assert garbled.done
        assert code == EXIT_BLOCKED, out
        assert f"{model} version {version}: {OUTCOME_BLOCKED}" in out
        assert subjects(self.repo)[:2] == [
            f"Roll back {model} version {version} in local",
            f"Canary {model} version {version} in local at 0 %",
        ]
        # Nothing above 0 % was ever committed for the candidate.
        champion = f"Release {model} version {self.champion} in local"
        assert percents_since(self.repo, champion, model) == [0, 0]
        assert manifest(self.repo, "main~1", model)["metadata"]["annotations"][ANNOTATION] == "true"
        tags = self.registry.version(model, version).tags
        assert tags[c.RELEASE_STATUS] == OUTCOME_BLOCKED
        assert tags[c.RELEASE_ANALYSIS].startswith("blocked: quality gate: likelihood:")
        assert self.registry.alias(model, c.CHAMPION) == self.champion
        assert self.registry.alias(model, c.CHALLENGER) is None
        # The report leads with the gate's verdict: no canary window came before it.
        report = Path(out.split("\nreport: ", 1)[1].split("\n", 1)[0]).read_text()
        header, gate = report.split("\n## Quality gate at 0 %\n", 1)
        assert header.startswith(f"# Release of {model} version {version} to local: blocked\n")
        assert "No canary window" not in report
        assert "## Canary against stable" not in report
        assert gate.lstrip().startswith("**blocked** (exit status 4, outcome `blocked`)")
        assert "| logprob_drop |" in gate
        return version, out


@pytest.mark.timeout(900)
def test_a_garbled_candidate_is_blocked_at_zero_an_intact_one_is_promoted(
    mlflow_server: Mlflow, gitops_repo: Path, local_platform: LocalPlatform, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    gated = Gated(MODEL, mlflow_server, gitops_repo, local_platform, tmp_path)

    # 1. Garbled: blocked at 0 %; the verdict's metrics and table in the release's run. The
    # judge is an InferenceService named by quality.judge: the model's own, standing in for a
    # judge model, reached through the front at its untagged predictor host (its champion
    # revision, 100 % of the weight while the candidate is at 0 %). The garbled answers
    # differ from the champion's, so it is asked about every example.
    gated.registry.set_model_tags(MODEL, {c.QUALITY_JUDGE: MODEL})
    v2, _ = gated.release_garbled(capsys, inline=True)
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
    judge_column = [row[table["columns"].index("judge")] for row in table["data"]]
    assert set(judge_column) <= {"candidate", "champion", "tie"}, judge_column
    # Asked three times; the CPU worker's words (four of them, deterministic) are none of A,
    # B or TIE, so each reply is an unparseable tie, counted as such.
    assert data.metrics["gate.judge_unparseable"] == 3, data.metrics
    assert data.metrics["gate.judge_ties"] == 3

    # 2. Intact: passes the gate at 0 %, then takes its 50 % step with live traffic. A
    # judge (quality.judge) is named: the intact candidate answers as the champion does, so
    # every comparison is a tie it is not asked about, and the judge does not block.
    v3 = gated.register()
    chat = f"{local_platform.front(MODEL)}/v1/chat/completions"
    with (
        loopback_server() as judge,
        Traffic(chat, headers={"Authorization": f"Bearer {API_KEY}"}, model=MODEL, interval=0.1),
    ):
        gated.registry.set_model_tags(MODEL, {c.QUALITY_JUDGE: f"{judge.url}/v1"})
        code = release(v3, mlflow_server, gitops_repo, local_platform, gated.state,
                       steps="50,100")  # fmt: skip
    out = capsys.readouterr().out
    assert judge.shown == [], "identical answers are ties without asking"
    assert code == 0, out
    assert subjects(gitops_repo)[:3] == [
        f"Promote {MODEL} version {v3} in local",
        f"Canary {MODEL} version {v3} in local at 50 %",
        f"Canary {MODEL} version {v3} in local at 0 %",
    ]
    assert gated.registry.alias(MODEL, c.CHAMPION) == v3
    gate, step = judged(mlflow_server, v3)["steps"]
    assert (gate["percent"], gate["decision"]) == (0, "promote")
    assert gate["gate"]["metrics"]["logprob_drop"] == pytest.approx(0.0)
    assert gate["gate"]["metrics"]["judge_ties"] == 3
    assert gate["gate"]["reasons"] == [
        "judge: 0 decisive comparisons, fewer than quality.judge_min_examples=10: not judged"
    ]
    assert gate["revision"] == revision(3)
    assert (step["percent"], step["decision"]) == (50, "promote")
    assert gated.registry.version(MODEL, v3).tags[c.RELEASE_ANALYSIS] == (
        "promote: quality gate at 0 % passed; canary within every threshold at 50 %"
    )
    # The report in the release's order: the gate at 0 %, then the traffic step.
    report = Path(out.split("\nreport: ", 1)[1].split("\n", 1)[0]).read_text()
    assert report.index("## Quality gate at 0 %") < report.index("## Canary against stable")
    assert "| judge_ties | 3 |" in report
    assert report.count(" | tie |") == 3, "the judge column of every example"
    run3 = Tracking.connect(mlflow_server.url).linked(MODEL, v3)
    assert run3 is not None
    table3 = Path(client.download_artifacts(run3.run_id, TABLE_FILE, str(tmp_path / "v3")))
    columns = json.loads(table3.read_text())["columns"]
    assert columns[-1] == "judge"


@pytest.mark.timeout(600)
def test_through_kfp_local_a_garbled_candidate_is_blocked_at_zero(
    mlflow_server: Mlflow, gitops_repo: Path, local_platform: LocalPlatform, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The graph, not only the bodies: the canary task's ``blocked`` takes the failed branch."""
    gated = Gated(KFP_MODEL, mlflow_server, gitops_repo, local_platform, tmp_path)
    version, out = gated.release_garbled(capsys, inline=False)
    for task in ("resolve", "canary", "rollback", "record-outcome"):
        assert f"· {task}" in out, out
    assert "· promote" not in out, out
    # The canary task's Markdown artifact, what the KFP UI shows on the run, is that report.
    kfp_report = next((gated.state / "kfp").glob("*/canary/report")).read_text()
    assert kfp_report.startswith(f"# Release of {KFP_MODEL} version {version} to local: blocked")
    assert "## Quality gate at 0 %" in kfp_report


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
