"""The committed pipeline YAML is what the pipeline compiles to, and says what KFP must do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nexus.release.run import compile_pipeline
from tests.support.processes import REPO

COMPILED = REPO / "pipelines" / "compiled" / "release.yaml"


def test_compiled_yaml_is_up_to_date(tmp_path: Path) -> None:
    fresh = tmp_path / "release.yaml"
    compile_pipeline(fresh)
    assert fresh.read_text() == COMPILED.read_text(), (
        "pipelines/compiled/release.yaml is stale: run `python pipelines/release.py`"
    )


def _tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    for component in spec["components"].values():
        tasks.update(component.get("dag", {}).get("tasks", {}))
    tasks.update(spec["root"]["dag"]["tasks"])
    return tasks


def test_compiled_pipeline_retries_commits_and_never_caches_side_effects() -> None:
    spec = yaml.safe_load(COMPILED.read_text())
    tasks = _tasks(spec)
    assert tasks["commit"]["retryPolicy"]["maxRetryCount"] == 3
    for name in ("resolve", "commit", "wait", "analyze", "promote", "rollback", "record-outcome"):
        assert not tasks[name].get("cachingOptions", {}).get("enableCache"), name
    # The exit handler runs whatever the body's outcome.
    assert tasks["record-outcome"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/nexus-serving/nexus-release:0.1.0"}
    # The image carries nexus and kfp: nothing is installed when a step starts.
    assert "pip install" not in COMPILED.read_text()
