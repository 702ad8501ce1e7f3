"""A model's releases: first release, a canary promoted, one rolled back, one from a failed run.

One scenario because each phase starts from the state the previous one left (champion,
revisions, Git history), exactly as releases of one model follow each other. Everything
the pipeline touches is real: the local platform's controller syncs the GitOps repository
into revisions (CPU worker + transformer) behind a front, its status API is what the wait
step polls, and Prometheus scrapes the revisions with the labels the analysis queries.
The first release, the rolled-back canary and the failed run go through the CLI and the
real KFP pipeline in ``kfp.local`` (the ``dsl.If``/``dsl.Else`` branches and the exit
handler as KFP runs them); the promoted canary runs the same steps through ``run_inline``
(one interpreter: on a 2-CPU CI machine each kfp.local step pays ~10 s of MLflow/KServe
imports; ``tests/e2e`` runs a promoted canary through ``kfp.local`` with ``nexus demo``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from mlflow import MlflowClient

from nexus.cli import main
from nexus.manifests.model import CPU_WORKER_IMAGE
from nexus.manifests.pools import load_pools
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.resolve import default_pools_file
from nexus.release.run import run_inline
from nexus.release.tracking import Tracking
from tests.release.conftest import (
    API_KEY,
    ISVC_API,
    LIFECYCLE_MODEL,
    FaultWhenUp,
    LocalPlatform,
    Mlflow,
    git,
)
from tests.support.processes import free_port
from tests.support.traffic import Traffic

PATH = f"inference_services/local/inferenceservice.{LIFECYCLE_MODEL}.yaml"


def manifest(repo: Path, rev: str = "main") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(git("--git-dir", str(repo), "show", f"{rev}:{PATH}"))
    return doc


def register(registry: Registry, uri: str) -> str:
    spec = c.ServingSpec(storage_uri=uri, runtime="vllm", gpu_pool="a100", max_model_len=4096)
    return registry.register(LIFECYCLE_MODEL, spec, load_pools(default_pools_file())).version


def judged(mlflow: Mlflow, version: str) -> dict[str, Any]:
    """The analysis of the version's last release, as its MLflow run records it."""
    tracking = Tracking.connect(mlflow.url)
    run = tracking.linked(LIFECYCLE_MODEL, version)
    assert run is not None, f"version {version} links no release run"
    return tracking.analysis(run)


def revision(n: int) -> str:
    return f"{LIFECYCLE_MODEL}-predictor-{n:05d}"


def pipeline_args(
    version: str, mlflow: Mlflow, repo: Path, platform: LocalPlatform
) -> dict[str, Any]:
    return {
        "model_name": LIFECYCLE_MODEL,
        "version": version,
        "environment": "local",
        "canary_percent": 20,
        # The local Prometheus scrapes every 5 s: a window of several scrapes.
        "analysis_window_s": 16.0,
        "max_error_ratio": 0.05,
        "max_p95_latency_ratio": 2.0,
        "min_canary_requests": 5,
        "gitops_repo": str(repo),
        "prometheus_url": platform.prometheus_url,
        "tracking_uri": mlflow.url,
        "status_url": platform.status_url,
        "namespace": "nexus",
        "wait_timeout_s": 120.0,
    }


# What `pipeline_args` sets, as `nexus release` flags (kfp.local runs).
CANARY_FLAGS = ("--environment", "local", "--canary-percent", "20", "--analysis-window", "16",
                "--max-error-ratio", "0.05", "--max-p95-latency-ratio", "2.0",
                "--min-canary-requests", "5", "--wait-timeout", "120")  # fmt: skip


def release(version: str, state: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    """``nexus release`` through kfp.local; its output, its exit status in the last line."""
    code = main(["release", LIFECYCLE_MODEL, "--version", version, "--state-dir", str(state),
                 *CANARY_FLAGS, *flags])  # fmt: skip
    return capsys.readouterr().out + f"\nexit status {code}"


@pytest.mark.timeout(600)
def test_release_lifecycle(
    mlflow_server: Mlflow,
    gitops_repo: Path,
    local_platform: LocalPlatform,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    registry = Registry.connect(mlflow_server.url)
    v1 = register(registry, "hf://acme/alpha-v1")

    # 1. First release, through the CLI with the endpoints `nexus up` would have written.
    state = tmp_path / "state"
    state.mkdir()
    (state / "endpoints.json").write_text(
        json.dumps(
            {
                "tracking_uri": mlflow_server.url,
                "gitops_repo": str(gitops_repo),
                "prometheus_url": local_platform.prometheus_url,
                "status_url": local_platform.status_url,
            }
        )
    )
    code = main(
        [
            "release",
            LIFECYCLE_MODEL,
            "--version",
            v1,
            "--environment",
            "local",
            "--state-dir",
            str(state),
            "--wait-timeout",
            "120",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    for step in ("resolve", "canary", "promote", "record-outcome"):
        assert f"· {step}" in out, out
    assert "first release" in out
    assert f"{LIFECYCLE_MODEL} version {v1}: promoted" in out
    assert registry.alias(LIFECYCLE_MODEL, c.CHAMPION) == v1
    first = manifest(gitops_repo)
    predictor = first["spec"]["predictor"]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["containers"][0]["image"] == CPU_WORKER_IMAGE
    assert predictor["nodeSelector"] == {"nexus.dev/pool": "cpu"}
    assert "--max-model-len=4096" in predictor["containers"][0]["args"]
    tags = registry.version(LIFECYCLE_MODEL, v1).tags
    assert tags[c.RELEASE_STATUS] == "promoted"
    assert tags[c.RELEASE_GIT_COMMIT] == git("--git-dir", str(gitops_repo), "rev-parse", "main")
    front = local_platform.front(LIFECYCLE_MODEL)
    chat_url, headers = f"{front}/v1/chat/completions", {"Authorization": f"Bearer {API_KEY}"}

    # 2. A healthy canary takes 20 %, passes the analysis and is promoted.
    v2 = register(registry, "hf://acme/alpha-v2")
    with Traffic(chat_url, headers=headers, model=LIFECYCLE_MODEL, interval=0.12):
        status = run_inline(pipeline_args(v2, mlflow_server, gitops_repo, local_platform))
    assert status == "promoted"
    analysis = judged(mlflow_server, v2)
    assert analysis["decision"] == "promote"
    # The tag a person reads in the registry UI is one line, not the JSON.
    assert registry.version(LIFECYCLE_MODEL, v2).tags[c.RELEASE_ANALYSIS] == (
        "promote: canary within every threshold"
    )
    assert analysis["canary"]["revision"] == revision(2)
    assert analysis["stable"]["revision"] == revision(1)
    assert analysis["canary"]["requests"] >= 5
    assert registry.alias(LIFECYCLE_MODEL, c.CHAMPION) == v2
    assert registry.alias(LIFECYCLE_MODEL, c.CHALLENGER) is None
    assert "canaryTrafficPercent" not in manifest(gitops_repo)["spec"]["predictor"]
    assert manifest(gitops_repo, "main~1")["spec"]["predictor"]["canaryTrafficPercent"] == 20
    subjects = git("--git-dir", str(gitops_repo), "log", "--format=%s", "main")
    assert subjects.splitlines()[:2] == [
        f"Promote {LIFECYCLE_MODEL} version {v2} in local",
        f"Canary {LIFECYCLE_MODEL} version {v2} in local at 20 %",
    ]

    # 3. A canary whose predictor fails every request is rolled back; v2 stays champion.
    v3 = register(registry, "hf://acme/alpha-v3")
    with (
        FaultWhenUp(local_platform, revision(3), error_ratio=1.0) as fault,
        Traffic(chat_url, headers=headers, model=LIFECYCLE_MODEL, interval=0.12),
    ):
        out = release(v3, state, capsys)
    assert fault.done
    assert out.endswith("exit status 3"), out
    assert "· rollback" in out, out
    assert f"{LIFECYCLE_MODEL} version {v3} rolled back" in out, out
    analysis = judged(mlflow_server, v3)
    assert analysis["canary"]["error_ratio"] > 0.5
    assert analysis["stable"]["error_ratio"] == 0
    assert any("5xx ratio" in reason for reason in analysis["reasons"])
    assert registry.alias(LIFECYCLE_MODEL, c.CHAMPION) == v2
    assert registry.alias(LIFECYCLE_MODEL, c.CHALLENGER) is None
    assert manifest(gitops_repo)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    tags = registry.version(LIFECYCLE_MODEL, v3).tags
    assert tags[c.RELEASE_STATUS] == "rolled_back"
    # The 5xx ratio among the reasons; on a loaded machine the failing canary may also have
    # served fewer requests than the minimum, which comes first (both roll it back).
    assert tags[c.RELEASE_ANALYSIS].startswith("rollback: ")
    assert "canary 5xx ratio " in tags[c.RELEASE_ANALYSIS]
    # The evidence: report and chart beside the log (as the analyze step's KFP artifacts
    # hold them), and the MLflow run the version links to, with per-signal metrics.
    report = Path(out.split("\nreport: ", 1)[1].split("\n", 1)[0])
    chart = Path(out.split("\nchart: ", 1)[1].split("\n", 1)[0])
    assert report.parent == chart.parent == state / "kfp"
    assert report.read_text().startswith(f"# Release of {LIFECYCLE_MODEL} version {v3}")
    assert "| 5xx ratio |" in report.read_text()
    assert "rollback above" in chart.read_text()
    kfp_report = next((state / "kfp").glob("*/canary/report"))
    assert "<svg" in next((state / "kfp").glob("*/canary/chart")).read_text()
    assert kfp_report.read_text().startswith("# Release of ")
    run_url = out.split("\nMLflow run: ", 1)[1].split("\n", 1)[0]
    assert tags["release.evidence"] == run_url
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(run_url.rsplit("/", 1)[1])
    assert run.data.tags["outcome"] == "rolled_back"
    assert run.data.params["version"] == v3
    assert run.data.params["git_commit"] != "-"
    assert len(client.get_metric_history(run.info.run_id, "error_ratio/canary")) >= 2
    assert run_url in client.get_model_version(LIFECYCLE_MODEL, v3).description
    # The platform agrees: the champion's revision takes everything again.
    isvc = httpx.get(f"{local_platform.status_url}{ISVC_API}/{LIFECYCLE_MODEL}").json()
    predictor = isvc["status"]["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == revision(2)
    assert {t["revisionName"]: t["percent"] for t in predictor["traffic"]} == {
        revision(3): 0,
        revision(2): 100,
    }

    # 4. A run that fails after its canary commit (Prometheus is gone) leaves no split:
    #    the exit handler takes the canary out of traffic and records why it failed.
    v4 = register(registry, "hf://acme/alpha-v4")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens
    out = release(v4, state, capsys, "--prometheus-url", dead)
    assert out.endswith("exit status 1"), out
    assert f"{LIFECYCLE_MODEL} version {v4}: canary reverted" in out, out
    subjects = git("--git-dir", str(gitops_repo), "log", "--format=%s", "main")
    assert subjects.splitlines()[:2] == [
        f"Revert the canary of {LIFECYCLE_MODEL} version {v4} in local",
        f"Canary {LIFECYCLE_MODEL} version {v4} in local at 20 %",
    ]
    assert manifest(gitops_repo)["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert manifest(gitops_repo, "main~1")["spec"]["predictor"]["canaryTrafficPercent"] == 20
    tags = registry.version(LIFECYCLE_MODEL, v4).tags
    assert tags[c.RELEASE_STATUS] == "failed"
    # KFP hands the exit handler only "Task ... failed."; the step recorded its own error.
    error = tags[c.RELEASE_ERROR]
    assert error.startswith(f"canary: ReleaseError: Prometheus at {dead} did not answer"), error
    assert "the canary was taken out of traffic in " in tags[c.RELEASE_ERROR]
    assert registry.alias(LIFECYCLE_MODEL, c.CHAMPION) == v2
    assert registry.alias(LIFECYCLE_MODEL, c.CHALLENGER) is None
    # Argo CD's part: the platform applies the revert and the champion takes everything.
    deadline = time.monotonic() + 60
    while True:
        isvc = httpx.get(f"{local_platform.status_url}{ISVC_API}/{LIFECYCLE_MODEL}").json()
        predictor = isvc["status"]["components"]["predictor"]
        split = {t["revisionName"]: t["percent"] for t in predictor["traffic"]}
        if split == {revision(4): 0, revision(2): 100}:
            break
        assert time.monotonic() < deadline, f"the revert was never applied: {split}"
        time.sleep(0.25)
