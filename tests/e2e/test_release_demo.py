"""`nexus demo` against a real `nexus up`, then the MLflow UI in a headless Chromium.

The demo is the canary flow as a person runs it: llama-8b version 1 registered and
released through the real pipeline (``kfp.local``) to 100 %, version 2 released in steps
of 20 % and 50 % under traffic, each step judged on Prometheus, and promoted, then the rolled-out worker refusing
connections while the fallback graph answers. One platform serves the module (tests run
in file order: the browser looks for what the demo left in the registry).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.browser import chromium
from tests.support.local_platform import alive, nexus, pids
from tests.support.processes import free_port_range

LLAMA = "inference_services/local/inferenceservice.llama-8b.yaml"
ISVC_API = "/apis/serving.kserve.io/v1beta1/namespaces/nexus/inferenceservices"
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A running platform's state directory; every process it started is gone afterwards."""
    state = tmp_path_factory.mktemp("demo") / "state"
    result = nexus("up", "--port-base", str(free_port_range(60)), state=state)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield state
    finally:
        running = pids(state)
        nexus("down", state=state)
        assert not [n for n, pid in running.items() if alive(pid)], "down left processes"


def endpoints(state: Path) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((state / "endpoints.json").read_text())
    return found


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_demo_canaries_promotes_and_falls_back(state: Path) -> None:
    from nexus.registry import conventions as c
    from nexus.registry.client import Registry
    from nexus.release.tracking import Tracking

    started = time.monotonic()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    demo = subprocess.run(
        [sys.executable, "-m", "nexus.cli", "demo", "--state-dir", str(state),
         "--refuse-seconds", "5", "--analysis-window", "30"],
        capture_output=True, text=True, timeout=700, check=False, env=env,
    )  # fmt: skip
    out = demo.stdout
    assert demo.returncode == 0, out + demo.stderr
    sys.stderr.write(f"nexus demo took {time.monotonic() - started:.0f}s\n")
    # The real pipeline ran twice, step by step.
    assert out.count("· canary") == 2, out
    assert "registered llama-8b version 1" in out
    assert "registered llama-8b version 2" in out
    assert re.search(r"llama-8b-predictor-\d+\s+canary\s+\d+\s+\d+ %", out), out
    assert "decision: promote" in out
    assert "not answered" not in out, "the demo's traffic must be served, not rate limited"
    assert "x-nexus-graph-step: qwen-1-5b" in out
    assert "the platform keeps running" in out
    # It ends with where to look at the canary's judgement: files and the MLflow run.
    report = re.search(r"  report +(\S+\.md)\n  chart +(\S+\.svg)\n  MLflow run +(\S+)", out)
    assert report, out
    assert Path(report[1]).read_text().startswith("# Release of llama-8b version 2 to local")
    assert "<svg" in Path(report[2]).read_text()
    assert "/#/experiments/" in report[3]

    urls = endpoints(state)
    registry = Registry.connect(urls["tracking_uri"])
    assert registry.alias("llama-8b", c.CHAMPION) == "2"
    assert registry.alias("llama-8b", c.CHALLENGER) is None
    assert registry.version("llama-8b", "1").tags[c.RELEASE_STATUS] == "promoted"
    tags = registry.version("llama-8b", "2").tags
    assert tags[c.RELEASE_STATUS] == "promoted"
    assert tags[c.RELEASE_ANALYSIS] == "promote: canary within every threshold at 20 %, 50 %"
    evidence = Tracking.connect(urls["tracking_uri"])
    run = evidence.linked("llama-8b", "2")
    assert run is not None
    analysis = evidence.analysis(run)
    assert analysis["decision"] == "promote"
    # Each step judged its own window; binomial shares far from the other step's.
    bounds = {20: (0.08, 0.4), 50: (0.3, 0.7)}
    assert [step["percent"] for step in analysis["steps"]] == [20, 50]
    for step in analysis["steps"]:
        canary, stable = step["canary"]["requests"], step["stable"]["requests"]
        assert canary >= 10, step
        low, high = bounds[step["percent"]]
        assert low < canary / (canary + stable) < high, step

    repo = urls["gitops_repo"]
    manifest = yaml.safe_load(git(repo, "show", f"main:{LLAMA}"))
    assert "canaryTrafficPercent" not in manifest["spec"]["predictor"]
    # The GitOps history of the InferenceService: 20 %, then 50 %, then the promotion.
    percents = [yaml.safe_load(git(repo, "show", f"main~{n}:{LLAMA}"))["spec"]["predictor"]
                .get("canaryTrafficPercent") for n in (2, 1)]  # fmt: skip
    assert percents == [20, 50]
    assert git(repo, "log", "--format=%s", "-3", "main").splitlines() == [
        "Promote llama-8b version 2 in local",
        "Canary llama-8b version 2 in local at 50 %",
        "Canary llama-8b version 2 in local at 20 %",
    ]
    assert tags[c.RELEASE_GIT_COMMIT] == git(repo, "rev-parse", "main")
    isvc = httpx.get(f"{urls['status_url']}{ISVC_API}/llama-8b").json()
    predictor = isvc["status"]["components"]["predictor"]
    latest = predictor["latestRolledoutRevision"]
    assert [(t["revisionName"], t["percent"]) for t in predictor["traffic"]] == [(latest, 100)]
    assert predictor["previousRolledoutRevision"] != latest
    # The released manifest keeps the public name the graphs use: "chat" still answers.
    deadline = time.monotonic() + 60  # the refuse fault (5 s) and the breaker clear
    key = {"Authorization": f"Bearer {urls['api_key']}"}
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    while True:
        answer = httpx.post(urls["graphs"]["chat-fallback"] + "/openai/v1/chat/completions",
                            json=body, headers=key, timeout=30)  # fmt: skip
        if answer.headers.get("x-nexus-graph-step") == "llama-8b" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-nexus-graph-step"] == "llama-8b", answer.text


def version_rows(dom: str) -> dict[str, str]:
    """Visible text of each row of the model page's versions table, by version number."""
    rows = {}
    for chunk in dom.split('role="row"'):
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", chunk))
        if match := re.search(r"Version (\d+) ", text):
            rows[match[1]] = text
    return rows


def test_mlflow_ui_shows_champion_on_the_promoted_version(state: Path, tmp_path: Path) -> None:
    page = f"{endpoints(state)['tracking_uri']}/#/models/llama-8b"
    rows: dict[str, str] = {}
    for _ in range(3):  # React renders on its own clock; a slow machine may need a retry
        rows = version_rows(chromium(page, "--dump-dom", profile=tmp_path))
        if "2" in rows and "champion" in rows["2"]:
            break
    assert "champion" in rows.get("2", ""), sorted(rows)
    assert "champion" not in rows.get("1", "missing")
    shot = tmp_path / "mlflow-champion.png"
    chromium(page, f"--screenshot={shot}", profile=tmp_path)
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
