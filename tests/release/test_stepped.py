"""Stepped canaries on the local platform: promoted step by step, rolled back at a later step,
cut short by the canary alert; and what a step list must be.

The scenario runs against real processes: MLflow, a bare GitOps repository, the local
platform's controller turning each commit into revisions (CPU worker + transformer) behind
a front that takes live traffic, and the Prometheus that scrapes them and loads the shipped
PrometheusRule (``nexus.local.prometheus.write_rules``). Releases go through ``run_inline``
(the graph of ``nexus.release.steps``, one interpreter) and ``nexus release --inline``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nexus.cli import main
from nexus.errors import ConfigError
from nexus.manifests.pools import load_pools
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.canary import CANARY_ALERT
from nexus.release.resolve import default_pools_file
from nexus.release.run import run_inline
from nexus.release.steps import EXIT, STEPS, inputs
from nexus.release.tracking import Tracking
from tests.release.conftest import API_KEY, ISVC_API, LocalPlatform, Mlflow, git
from tests.support.processes import REPO
from tests.support.traffic import Traffic

MODEL = "stepper"
PATH = f"inference_services/local/inferenceservice.{MODEL}.yaml"
EVALUATION_INTERVAL_S = 5.0  # nexus.local.prometheus.SCRAPE_INTERVAL, its evaluation_interval


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("50,20,100", "the steps must increase"),
        ("20,20,100", "the steps must increase"),
        ("20,50", "the last step must be 100"),
        ("0,50,100", "every step must be within 1..100"),
        ("20,150", "every step must be within 1..100"),
        ("100", "at least one canary step must come before 100"),
        ("20,x,100", "must be comma-separated whole percents"),
        ("", "must be comma-separated whole percents"),
    ],
)
def test_invalid_step_lists_are_refused_with_the_reason(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as refused:
        c.canary_steps(raw, source="--steps")
    assert str(refused.value).startswith(f"--steps={raw!r}: ") or "whole percents" in problem


def test_valid_step_lists() -> None:
    assert c.canary_steps("10,25,50,100") == (10, 25, 50, 100)
    assert c.canary_steps("1,100") == (1, 100)


def test_the_shipped_rule_defines_the_alert_a_step_watches() -> None:
    doc = yaml.safe_load((REPO / "platform/k8s/monitoring/nexus.prometheusrule.yaml").read_text())
    alerts = {r.get("alert") for g in doc["spec"]["groups"] for r in g["rules"]}
    assert CANARY_ALERT in alerts


def test_every_step_gets_its_inputs_from_the_pipeline_or_an_earlier_step() -> None:
    """What the inline run feeds each body is what the KFP pipeline feeds its component."""
    from nexus.release.pipeline import COMPONENTS, release

    params = set(release.component_spec.inputs or {})
    known = {*params, "run"}
    for step in (*STEPS, EXIT):
        wanted = set(COMPONENTS[step.name].component_spec.inputs or {}) - {"status"}
        extra = {"state", "error"} if step is EXIT else set()
        assert set(inputs(step, dict.fromkeys(known | extra))) == wanted | extra, step.name
        if step.output:
            known.add(step.output)


def manifest(repo: Path, rev: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(git("--git-dir", str(repo), "show", f"{rev}:{PATH}"))
    return doc


def subjects(repo: Path) -> list[str]:
    return git("--git-dir", str(repo), "log", "--format=%s", "main").splitlines()


def revision(n: int) -> str:
    return f"{MODEL}-predictor-{n:05d}"


def arguments(version: str, mlflow: Mlflow, repo: Path, platform: LocalPlatform, *,
              steps: str, window_s: float = 16.0) -> dict[str, Any]:  # fmt: skip
    return {
        "model_name": MODEL,
        "version": version,
        "environment": "local",
        "steps": steps,
        "analysis_window_s": window_s,
        "max_error_ratio": 0.05,
        "max_p95_latency_ratio": 2.0,
        "min_canary_requests": 5,
        "gitops_repo": str(repo),
        "prometheus_url": platform.prometheus_url,
        "tracking_uri": mlflow.url,
        "status_url": platform.status_url,
        "wait_timeout_s": 120.0,
    }


class WhenCommitted:
    """Runs ``action`` once the GitOps history has a subject ending with ``suffix`` (a
    thread: the commit happens inside the release under test)."""

    def __init__(self, repo: Path, suffix: str, action: Any) -> None:
        self._repo, self._suffix, self._action = repo, suffix, action
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.done = False

    def _run(self) -> None:
        while not self._stop.is_set():
            if any(s.endswith(self._suffix) for s in subjects(self._repo)[:1]):
                self._action()
                self.done = True
                return
            self._stop.wait(0.1)

    def __enter__(self) -> WhenCommitted:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)


def split(platform: LocalPlatform) -> dict[str, int]:
    """The predictor's traffic as the platform's status API reports it."""
    isvc = httpx.get(f"{platform.status_url}{ISVC_API}/{MODEL}").json()
    traffic = isvc["status"]["components"]["predictor"]["traffic"]
    return {t["revisionName"]: t["percent"] for t in traffic}


def judged(mlflow: Mlflow, version: str) -> dict[str, Any]:
    tracking = Tracking.connect(mlflow.url)
    run = tracking.linked(MODEL, version)
    assert run is not None
    return tracking.analysis(run)


@pytest.mark.timeout(900)
def test_stepped_canaries(
    mlflow_server: Mlflow, gitops_repo: Path, local_platform: LocalPlatform, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    registry = Registry.connect(mlflow_server.url)

    def register() -> str:
        """A new version with its own files, so that releasing it makes a new revision."""
        registered.append(f"hf://acme/stepper-v{len(registered) + 1}")
        spec = c.ServingSpec(storage_uri=registered[-1], runtime="vllm", gpu_pool="a100")
        return registry.register(MODEL, spec, load_pools(default_pools_file())).version

    registered: list[str] = []

    v1 = register()
    assert run_inline(arguments(v1, mlflow_server, gitops_repo, local_platform, steps="")) == (
        "promoted"
    )
    chat = f"{local_platform.front(MODEL)}/v1/chat/completions"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    # The local Prometheus evaluates the shipped rules (nexus.local.prometheus.write_rules).
    rules = httpx.get(f"{local_platform.prometheus_url}/api/v1/rules").json()["data"]["groups"]
    assert CANARY_ALERT in {r["name"] for g in rules for r in g["rules"]}

    # 1. With live traffic, --steps 20,50,100 promotes: Git shows 20 %, 50 %, then 100 %.
    v2 = register()
    state = tmp_path / "state"
    state.mkdir()
    with Traffic(chat, headers=headers, model=MODEL, interval=0.1):
        code = main(["release", MODEL, "--version", v2, "--inline", "--steps", "20,50,100",
                     "--environment", "local", "--state-dir", str(state),
                     "--tracking-uri", mlflow_server.url, "--gitops-repo", str(gitops_repo),
                     "--prometheus-url", local_platform.prometheus_url,
                     "--status-url", local_platform.status_url, "--analysis-window", "16",
                     "--max-error-ratio", "0.05", "--max-p95-latency-ratio", "2.0",
                     "--min-canary-requests", "5", "--wait-timeout", "120"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert subjects(gitops_repo)[:3] == [
        f"Promote {MODEL} version {v2} in local",
        f"Canary {MODEL} version {v2} in local at 50 %",
        f"Canary {MODEL} version {v2} in local at 20 %",
    ]
    assert "canaryTrafficPercent" not in manifest(gitops_repo, "main")["spec"]["predictor"]
    assert manifest(gitops_repo, "main~1")["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert manifest(gitops_repo, "main~2")["spec"]["predictor"]["canaryTrafficPercent"] == 20
    assert registry.alias(MODEL, c.CHAMPION) == v2
    analysis = judged(mlflow_server, v2)
    assert [(s["percent"], s["decision"]) for s in analysis["steps"]] == [
        (20, "promote"),
        (50, "promote"),
    ]
    assert all(s["canary"]["requests"] >= 5 for s in analysis["steps"])
    # The canary's share grows from step to step, as Prometheus measured it.
    shares = [s["canary"]["requests"] / (s["canary"]["requests"] + s["stable"]["requests"])
              for s in analysis["steps"]]  # fmt: skip
    assert shares[0] < shares[1], shares
    report = Path(out.split("\nreport: ", 1)[1].split("\n", 1)[0]).read_text()
    assert "| 20 % | 16 s |" in report
    assert "| 50 % | 16 s |" in report
    assert registry.version(MODEL, v2).tags[c.RELEASE_ANALYSIS] == (
        "promote: canary within every threshold at 20 %, 50 %"
    )

    # 2. Errors injected into the canary once its second step is committed: rolled back at
    #    that step, and no later step is committed.
    v3 = register()

    def break_canary() -> None:
        deadline = time.monotonic() + 60
        while (url := local_platform.worker_url(revision(3))) is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        httpx.post(f"{url}/admin/faults", json={"error_ratio": 1.0}).raise_for_status()

    with (
        WhenCommitted(gitops_repo, "at 50 %", break_canary) as fault,
        Traffic(chat, headers=headers, model=MODEL, interval=0.1),
    ):
        status = run_inline(
            arguments(v3, mlflow_server, gitops_repo, local_platform, steps="20,50,75,100")
        )
    assert fault.done
    assert status == "rolled_back"
    assert subjects(gitops_repo)[:3] == [
        f"Roll back {MODEL} version {v3} in local",
        f"Canary {MODEL} version {v3} in local at 50 %",
        f"Canary {MODEL} version {v3} in local at 20 %",
    ]
    analysis = judged(mlflow_server, v3)
    assert [(s["percent"], s["decision"]) for s in analysis["steps"]] == [
        (20, "promote"),
        (50, "rollback"),
    ]
    assert analysis["steps"][1]["canary"]["error_ratio"] > 0.5
    # Among the reasons (a canary short of its minimum sample on a loaded machine says so first).
    assert any(r.startswith("at 50 %: canary 5xx ratio ") for r in analysis["reasons"])
    assert registry.alias(MODEL, c.CHAMPION) == v2
    assert registry.version(MODEL, v3).tags[c.RELEASE_STATUS] == "rolled_back"

    # 3. The canary alert firing mid-window ends the step at once as a rollback. The shipped
    #    rule waits 5 minutes ("for: 5m") before firing; a rule of the same name that fires
    #    for this revision on its first evaluation stands in for it.
    v4 = register()
    window_s = 120.0
    rule = tmp_path / "platform" / "prometheus" / "rules" / "test-canary-alert.yml"

    def fire() -> None:
        # Into the window: the split is applied (the step's wait is over), a few seconds on.
        deadline = time.monotonic() + 120
        while split(local_platform).get(revision(4)) != 20:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(4)
        rule.write_text(yaml.safe_dump({"groups": [{"name": "test-canary", "rules": [{
            "alert": CANARY_ALERT, "expr": "vector(1)",
            "labels": {"isvc": MODEL, "revision": revision(4), "namespace": "nexus"},
        }]}]}))  # fmt: skip
        httpx.post(f"{local_platform.prometheus_url}/-/reload").raise_for_status()

    started = time.monotonic()
    with (
        WhenCommitted(gitops_repo, "at 20 %", fire) as alert,
        Traffic(chat, headers=headers, model=MODEL, interval=0.1),
    ):
        status = run_inline(
            arguments(
                v4, mlflow_server, gitops_repo, local_platform, steps="20,100", window_s=window_s
            )
        )
    took = time.monotonic() - started
    assert alert.done
    assert status == "rolled_back"
    assert took < window_s, took
    (step,) = judged(mlflow_server, v4)["steps"]
    assert step["alert"] == CANARY_ALERT
    assert step["reasons"][0].startswith(f"alert {CANARY_ALERT} fired for {revision(4)}")
    # When Prometheus turned the alert on, against when the step ended (its window's end).
    firing = httpx.get(f"{local_platform.prometheus_url}/api/v1/alerts").json()["data"]["alerts"]
    (ours,) = [a for a in firing if a["labels"].get("revision") == revision(4)]
    active_at = _timestamp(ours["activeAt"])
    assert 0 <= step["window_end"] - active_at <= EVALUATION_INTERVAL_S, (active_at, step)
    assert subjects(gitops_repo)[:2] == [
        f"Roll back {MODEL} version {v4} in local",
        f"Canary {MODEL} version {v4} in local at 20 %",
    ]
    rule.unlink()


def _timestamp(rfc3339: str) -> float:
    """Prometheus' ``activeAt`` (RFC 3339 with nanoseconds) as seconds since the epoch."""
    from datetime import datetime

    head, _, fraction = rfc3339.rstrip("Z").partition(".")
    base = datetime.fromisoformat(head + "+00:00").timestamp()
    return base + float(f"0.{fraction or 0}")
