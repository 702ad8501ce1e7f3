"""The committed pipeline YAML is what the pipeline compiles to, and says what KFP must do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nexus.release.git_credentials import MOUNT_PATH
from nexus.release.pipeline import GIT_SECRET, IN_CLUSTER, RELEASE_IMAGE, compile_pipeline
from nexus.release.steps import EXIT, STEPS
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


def _documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and the platform (Kubernetes) spec kfp-kubernetes adds."""
    spec, platform = yaml.safe_load_all(COMPILED.read_text())
    return spec, platform


def test_compiled_pipeline_is_the_step_list_and_never_caches_side_effects() -> None:
    spec, _ = _documents()
    tasks = _tasks(spec)
    # The step list is the graph: one task per step, never cached; the canary is not retried
    # by KFP (a retry would start its traffic steps over; it retries its own commits).
    steps = {step.name for step in (*STEPS, EXIT)}
    assert {name for name in tasks if "componentRef" in tasks[name]
            and not tasks[name]["componentRef"]["name"].startswith("comp-condition")
            and not tasks[name]["componentRef"]["name"].startswith("comp-exit")} == steps  # fmt: skip
    assert "retryPolicy" not in tasks["canary"]
    for name in steps:
        assert not tasks[name].get("cachingOptions", {}).get("enableCache"), name
    # The exit handler runs whatever the body's outcome.
    assert tasks["record-outcome"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {RELEASE_IMAGE}  # test_dockerfile.py: the Dockerfile's release target
    # The image carries nexus and kfp: nothing is installed when a step starts.
    assert "pip install" not in COMPILED.read_text()


def test_every_step_that_pushes_mounts_the_git_secret_and_no_other_does() -> None:
    spec, platform = _documents()
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    pushing = {f"exec-{step.name}" for step in (*STEPS, EXIT) if step.pushes}
    assert pushing == {"exec-canary", "exec-promote", "exec-rollback", "exec-record-outcome"}
    assert set(executors) == pushing
    for name, config in executors.items():
        (volume,) = config["secretAsVolume"]
        assert volume["mountPath"] == MOUNT_PATH, name
        assert volume["optional"] is False, name
        # The Secret's name is the run's `git_secret` parameter, passed down to the step.
        parameter = volume["secretNameParameter"]["componentInputParameter"]
        assert parameter in {"git_secret", "pipelinechannel--git_secret"}, name
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["git_secret"]["defaultValue"] == GIT_SECRET


def test_cluster_urls_are_parameters_with_in_cluster_defaults() -> None:
    spec, _ = _documents()
    params = spec["root"]["inputDefinitions"]["parameters"]
    for name, url in IN_CLUSTER.items():
        assert params[name]["defaultValue"] == url, name
        assert ".svc" in url, name
    assert IN_CLUSTER["status_url"] == "https://kubernetes.default.svc"
