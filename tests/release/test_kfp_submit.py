"""``nexus release --kfp-host`` against a loopback server speaking KFP's v2beta1 REST API.

The real ``kfp.Client`` (kfp 2.17) does the talking; ``tests/support/kfp_api.py`` records
what it sends: the uploaded package, the experiment and the run with its parameters and
ServiceAccount.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from nexus.cli import main
from nexus.release.pipeline import IN_CLUSTER, PIPELINE_NAME, SERVICE_ACCOUNT
from nexus.release.steps import EXIT, STEPS
from tests.support.kfp_api import API, kfp_api
from tests.support.processes import REPO

COMPILED = REPO / "pipelines" / "compiled" / "release.yaml"


def release(url: str, state: Path, *extra: str) -> int:
    return main(["release", "llama-8b", "--version", "3", "--kfp-host", url,
                 "--gitops-repo", "https://git.example/nexus/gitops.git",
                 "--canary-percent", "20", "--state-dir", str(state), *extra])  # fmt: skip


def digest(package: Path) -> str:
    return hashlib.sha256(package.read_bytes()).hexdigest()[:12]


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state directory as `nexus up` leaves it: loopback URLs a cluster cannot reach."""
    endpoints = {
        "tracking_uri": "http://127.0.0.1:5000",
        "prometheus_url": "http://127.0.0.1:9090",
        "status_url": "http://127.0.0.1:8000",
        "gitops_repo": "/home/me/.nexus/gitops.git",
    }
    (tmp_path / "endpoints.json").write_text(json.dumps(endpoints))
    return tmp_path


def test_kfp_host_uploads_the_package_and_starts_a_run(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with kfp_api() as api:
        assert release(api.url, state, "--package", str(COMPILED)) == 0

    assert api.calls() == [
        f"GET {API}/healthz",
        f"GET {API}/pipelines",
        f"POST {API}/pipelines/upload",
        f"POST {API}/pipelines/upload_version",
        f"GET {API}/experiments",
        f"POST {API}/experiments",
        f"POST {API}/runs",
    ]
    # The committed package, byte for byte, as the multipart `uploadfile`.
    assert api.uploads == [COMPILED.read_bytes()] * 2
    upload, upload_version = api.requests[2:4]
    assert upload.query["name"] == [PIPELINE_NAME]
    assert upload.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert upload_version.query["pipelineid"] == ["pipeline-1"]
    first, version = api.versions
    assert first["display_name"] == PIPELINE_NAME
    # The run's version is named after the package's digest.
    assert version["display_name"] == f"{PIPELINE_NAME}-{digest(COMPILED)}"
    spec = version["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME

    (experiment,) = api.experiments
    assert experiment["display_name"] == "nexus-release"
    (run,) = api.runs
    assert run["display_name"] == "release-llama-8b-3"
    assert run["experiment_id"] == experiment["experiment_id"]
    assert run["service_account"] == SERVICE_ACCOUNT
    assert run["pipeline_version_reference"] == {
        "pipeline_id": "pipeline-1",
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert "pipeline_spec" not in run  # the run points at the uploaded version
    params = run["runtime_config"]["parameters"]
    assert params["model_name"] == "llama-8b"
    assert params["version"] == "3"
    assert params["canary_percent"] == 20
    assert params["gitops_repo"] == "https://git.example/nexus/gitops.git"
    # This machine's endpoints never reach the cluster: the in-cluster defaults apply.
    for name in IN_CLUSTER:
        assert name not in params, name
    # Every parameter sent is one the pipeline declares, with the declared type.
    declared = spec["root"]["inputDefinitions"]["parameters"]
    kinds = {"STRING": str, "NUMBER_INTEGER": int, "NUMBER_DOUBLE": float}
    for name, value in params.items():
        assert isinstance(value, kinds[declared[name]["parameterType"]]), name
    assert f"{api.url}/#/runs/details/run-" in capsys.readouterr().out


def test_the_same_package_is_uploaded_once_and_a_changed_one_as_a_new_version(
    state: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text(COMPILED.read_text() + "\n# changed\n")
    with kfp_api() as api:
        assert release(api.url, state, "--package", str(COMPILED)) == 0
        assert release(api.url, state, "--package", str(COMPILED)) == 0
        assert release(api.url, state, "--package", str(changed)) == 0

    assert [c for c in api.calls() if "upload" in c] == [
        f"POST {API}/pipelines/upload",
        f"POST {API}/pipelines/upload_version",
        f"POST {API}/pipelines/upload_version",
    ]
    _, first, second = api.versions
    assert second["display_name"] == f"{PIPELINE_NAME}-{digest(changed)}"
    assert [r["pipeline_version_reference"]["pipeline_version_id"] for r in api.runs] == [
        first["pipeline_version_id"],
        first["pipeline_version_id"],
        second["pipeline_version_id"],
    ]
    assert len(api.experiments) == 1  # found by name the second time


def test_without_a_package_the_pipeline_is_compiled_fresh(state: Path) -> None:
    with kfp_api() as api:
        assert release(api.url, state, "--package", str(state / "absent.yaml")) == 0
    package, _ = api.uploads
    spec, platform = yaml.safe_load_all(package)
    assert spec["pipelineInfo"]["name"] == PIPELINE_NAME
    # Every step that pushes to Git, and only those, mounts the Git credentials.
    pushing = {f"exec-{step.name}" for step in (*STEPS, EXIT) if step.pushes}
    assert set(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]) == pushing


def test_an_ambiguous_cluster_is_refused_with_a_message(
    state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with kfp_api() as api:
        for n in (1, 2):
            api.pipelines.append({"pipeline_id": f"p{n}", "display_name": PIPELINE_NAME})
        assert release(api.url, state, "--package", str(COMPILED)) == 1
    assert api.runs == []
    err = capsys.readouterr().err
    assert f"KFP at {api.url}: Multiple pipelines with the name: {PIPELINE_NAME}" in err
