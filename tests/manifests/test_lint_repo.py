"""Every shipped manifest passes `nexus lint`, and the command reports like it promises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nexus.cli import main
from nexus.manifests.lint import LintOptions, default_paths, lint_paths
from nexus.manifests.schema import SchemaRegistry
from tests.manifests.conftest import FIXTURES, REPO_ROOT


def test_shipped_manifests_have_no_errors_and_none_unvalidated(schemas: SchemaRegistry) -> None:
    findings = lint_paths(
        default_paths(REPO_ROOT), schemas=schemas, options=LintOptions(repo_root=REPO_ROOT)
    )
    assert [f.text() for f in findings] == []


ISTIO_VIRTUALSERVICE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: graphs, namespace: nexus}
spec:
  hosts: ["*"]
  gateways: [nexus-public]
  http:
  - route:
    - destination: {host: chat-fallback.nexus.svc.cluster.local}
    timout: 30s
"""


def test_istio_documents_are_validated_though_their_crds_omit_apiversion_kind_metadata(
    schemas: SchemaRegistry, tmp_path: Path
) -> None:
    # Istio's CRDs declare only spec and status; the API server adds the rest to every
    # custom resource, so a correct document passes and a misspelt field is still caught.
    good = tmp_path / "good.yaml"
    good.write_text(ISTIO_VIRTUALSERVICE.replace("    timout: 30s\n", ""))
    bad = tmp_path / "bad.yaml"
    bad.write_text(ISTIO_VIRTUALSERVICE)
    options = LintOptions(repo_root=None, isolated=True, use_kubectl=False)
    assert lint_paths([good], schemas=schemas, options=options) == []
    findings = lint_paths([bad], schemas=schemas, options=options)
    assert [(f.rule, f.field) for f in findings] == [("schema", "spec.http[0]")]
    assert "'timout' was unexpected" in findings[0].message


def test_shipped_manifests_cover_every_folder() -> None:
    folders = {p.relative_to(REPO_ROOT).as_posix() for p in default_paths(REPO_ROOT)}
    assert {"platform/k8s", "inference_services", "argocd"} <= folders


def test_cli_validates_with_the_shipped_schemas_when_no_crds_are_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEXUS_CRDS_DIR", raising=False)
    monkeypatch.chdir(REPO_ROOT)
    inference_services = sorted(
        p.relative_to(REPO_ROOT).as_posix()
        for p in (REPO_ROOT / "inference_services").rglob("inferenceservice.*.yaml")
    )
    # Every InferenceService and runtime must be validated.
    assert main(["lint", *inference_services, "platform/k8s/runtimes"]) == 0
    captured = capsys.readouterr()
    assert "0 error(s), 0 warning(s)" in captured.out  # nothing left unvalidated
    assert "checked against bundled schemas (" in captured.err
    assert "serving.kserve.io: kserve/kserve@" in captured.err


def test_cli_reports_a_schema_error_with_the_shipped_schemas(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NEXUS_CRDS_DIR", raising=False)
    isvc = tmp_path / "isvc.yaml"
    isvc.write_text(
        "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\n"
        "metadata: {name: typo}\nspec: {predictor: {minReplica: 1}}\n"
    )
    assert main(["lint", "--isolated", str(isvc)]) == 1
    out = capsys.readouterr().out
    assert "spec.predictor" in out
    assert "'minReplica' was unexpected" in out


def test_cli_json_names_file_document_field_and_fix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT)
    target = FIXTURES / "isvc" / "canary-raw.yaml"
    code = main(["lint", "--format", "json", "--isolated", str(target)])
    assert code == 1
    findings = json.loads(capsys.readouterr().out)
    canary = [f for f in findings if f["rule"] == "canary-needs-serverless"]
    assert len(canary) == 1
    assert canary[0]["path"].endswith("fixtures/isvc/canary-raw.yaml")
    assert canary[0]["document"] == 0
    assert canary[0]["field"] == "spec.predictor.canaryTrafficPercent"
    assert "Knative" in canary[0]["fix"]


def test_crds_dir_comes_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # An empty CRD directory leaves InferenceServices unvalidated: reported, not passed.
    monkeypatch.setenv("NEXUS_CRDS_DIR", str(tmp_path))
    monkeypatch.chdir(REPO_ROOT)
    assert main(["lint", "inference_services/prod"]) == 0
    out = capsys.readouterr().out
    assert "schema-unknown" in out
    assert "InferenceService" in out


NARROW_ISVC_CRD = """\
apiVersion: v1
kind: List
items:
- apiVersion: apiextensions.k8s.io/v1
  kind: CustomResourceDefinition
  metadata: {name: inferenceservices.serving.kserve.io}
  spec:
    group: serving.kserve.io
    names: {kind: InferenceService, plural: inferenceservices}
    scope: Namespaced
    versions:
    - name: v1beta1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            apiVersion: {type: string}
            kind: {type: string}
            metadata: {type: object}
            spec:
              type: object
              required: [clusterOnly]
              properties:
                clusterOnly: {type: string}
"""


def test_crds_flag_overrides_the_shipped_schemas(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A cluster's own CRD (as `kubectl get crd -o yaml` prints it) wins over the bundle.
    monkeypatch.delenv("NEXUS_CRDS_DIR", raising=False)
    monkeypatch.chdir(REPO_ROOT)
    crds = tmp_path / "crds"
    crds.mkdir()
    (crds / "isvc.yaml").write_text(NARROW_ISVC_CRD)
    target = "inference_services/prod"
    assert main(["lint", target]) == 0
    capsys.readouterr()
    assert main(["lint", "--crds", str(crds), target]) == 1
    captured = capsys.readouterr()
    assert "'clusterOnly' is a required property" in captured.out
    assert f"checked against {crds}" in captured.err


def test_a_missing_crds_dir_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["lint", "--crds", str(tmp_path / "nope"), "inference_services"]) == 2
    assert "is not a directory" in capsys.readouterr().err
