"""Every shipped manifest passes `nexus lint`, and the command reports like it promises."""

from __future__ import annotations

import json

import pytest

from nexus.cli import main
from nexus.manifests.lint import LintOptions, default_paths, lint_paths
from nexus.manifests.schema import SchemaRegistry
from tests.manifests.conftest import FIXTURES, REPO_ROOT

# Kinds whose CRDs are not in ../shared/crds: reported as not validated, never passed.
# (`Component` is Kustomize's kustomization of platform/k8s/components/<feature>; its
# fields are checked by tests/manifests/test_security_manifests.py.)
UNVALIDATED = {
    "AuthorizationPolicy",
    "Component",
    "ExternalSecret",
    "Gateway",
    "PodMonitor",
    "PrometheusRule",
    "VirtualService",
    "LocalModelNamespaceCache",
    "LocalModelNodeGroup",
}


def test_shipped_manifests_have_no_errors(schemas: SchemaRegistry) -> None:
    findings = lint_paths(
        default_paths(REPO_ROOT), schemas=schemas, options=LintOptions(repo_root=REPO_ROOT)
    )
    errors = [f.text() for f in findings if f.severity == "error"]
    assert errors == []
    warnings = {(f.rule, f.message.split()[4]) for f in findings if f.severity == "warning"}
    assert {rule for rule, _ in warnings} == {"schema-unknown"}
    assert {kind for _, kind in warnings} == UNVALIDATED


def test_shipped_manifests_cover_every_folder() -> None:
    folders = {p.relative_to(REPO_ROOT).as_posix() for p in default_paths(REPO_ROOT)}
    assert {"platform/k8s", "inference_services", "argocd"} <= folders


def test_cli_exits_zero_on_the_repository(
    crds: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)
    assert main(["lint", "--crds", str(crds), "inference_services", "platform/k8s/runtimes"]) == 0
    assert "0 error(s)" in capsys.readouterr().out


def test_cli_json_names_file_document_field_and_fix(
    crds: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)
    target = FIXTURES / "isvc" / "canary-raw.yaml"
    code = main(["lint", "--crds", str(crds), "--format", "json", "--isolated", str(target)])
    assert code == 1
    findings = json.loads(capsys.readouterr().out)
    canary = [f for f in findings if f["rule"] == "canary-needs-serverless"]
    assert len(canary) == 1
    assert canary[0]["path"].endswith("fixtures/isvc/canary-raw.yaml")
    assert canary[0]["document"] == 0
    assert canary[0]["field"] == "spec.predictor.canaryTrafficPercent"
    assert "Knative" in canary[0]["fix"]


def test_crds_dir_comes_from_the_environment(
    crds: object,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: object,
) -> None:
    # An empty CRD directory leaves InferenceServices unvalidated: reported, not passed.
    monkeypatch.setenv("NEXUS_CRDS_DIR", str(tmp_path))
    monkeypatch.chdir(REPO_ROOT)
    assert main(["lint", "inference_services/prod"]) == 0
    out = capsys.readouterr().out
    assert "schema-unknown" in out
    assert "InferenceService" in out
