"""The CRD schemas `nexus lint` ships: generated, compact, tagged, and current.

This is the one test that reads the team's CRD folder (``../shared/crds`` beside the
repository): when it is there, the shipped bundle must be exactly what ``make schemas``
generates from it. In a clone without it, the same comparison runs on CRDs rebuilt from the
bundle itself, so the generator and the committed files are still checked against each
other. ``.ci/run`` runs this file in place as well as the whole suite from a lone copy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nexus.errors import ConfigError
from nexus.manifests.bundle import INDEX, Bundle, compact, generate, packaged_dir, read
from tests.manifests.conftest import REPO_ROOT

TEAM_CRDS = REPO_ROOT.parent / "shared" / "crds"


def _crds_from_bundle(bundle: Bundle, into: Path) -> Path:
    """CRD files holding the bundle's schemas: what a CRD folder would need to give it."""
    for (group, kind), name in bundle.kinds.items():
        plural = name.removesuffix(".json").split("_", 1)[1]
        versions = [
            {"name": v, "served": True, "storage": False, "schema": {"openAPIV3Schema": s}}
            for v, s in bundle.schemas(group, kind).items()
        ]
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "spec": {
                "group": group,
                "names": {"kind": kind, "plural": plural},
                "versions": versions,
            },
        }
        # JSON is YAML: the generator reads it like any CRD file.
        (into / f"{plural}.yaml").write_text(json.dumps(crd))
    return into


def test_the_shipped_bundle_is_what_make_schemas_generates(tmp_path: Path) -> None:
    committed = read(packaged_dir())
    bundle = Bundle.load()
    source = TEAM_CRDS if TEAM_CRDS.is_dir() else _crds_from_bundle(bundle, tmp_path)
    regenerated = generate(source, bundle.sources)
    assert sorted(regenerated) == sorted(committed)
    stale = [name for name in committed if committed[name] != regenerated[name]]
    assert stale == [], f"run `make schemas CRDS={source}`: these differ: {stale}"
    if TEAM_CRDS.is_dir():
        # The labels name the commits the CRDs were copied from.
        commits = re.findall(r"\b[0-9a-f]{40}\b", (TEAM_CRDS / "SOURCES.md").read_text())
        assert commits
        assert {c for c in commits if any(c in s for s in bundle.sources.values())} == set(commits)


SHIPPED_KINDS = {
    "serving.kserve.io": (
        "InferenceService",
        "InferenceGraph",
        "ServingRuntime",
        "ClusterServingRuntime",
        "LocalModelCache",
        "LocalModelNamespaceCache",
        "LocalModelNodeGroup",
        "LocalModelNode",
    ),
    "argoproj.io": ("Application", "ApplicationSet", "AppProject"),
    "networking.istio.io": ("Gateway", "VirtualService", "DestinationRule"),
    "security.istio.io": ("AuthorizationPolicy", "PeerAuthentication"),
    "monitoring.coreos.com": ("Prometheus", "PodMonitor", "ServiceMonitor", "PrometheusRule"),
    "external-secrets.io": (
        "ExternalSecret",
        "SecretStore",
        "ClusterExternalSecret",
        "ClusterSecretStore",
    ),
}
SOURCE_REPOSITORIES = {
    "serving.kserve.io": "kserve/kserve@",
    "argoproj.io": "argoproj/argo-cd@",
    "networking.istio.io": "istio/istio@",
    "security.istio.io": "istio/istio@",
    "monitoring.coreos.com": "prometheus-operator/prometheus-operator@",
    "external-secrets.io": "external-secrets/external-secrets@",
}


def test_the_bundle_covers_every_shipped_kind_and_names_its_sources() -> None:
    bundle = Bundle.load()
    assert set(bundle.kinds) == {(g, k) for g, kinds in SHIPPED_KINDS.items() for k in kinds}
    for group, repository in SOURCE_REPOSITORIES.items():
        assert bundle.sources[group].startswith(repository), group
    isvc = bundle.schemas("serving.kserve.io", "InferenceService")
    assert set(isvc) >= {"v1beta1"}
    text = (packaged_dir() / bundle.kinds[("serving.kserve.io", "InferenceService")]).read_text()
    for group, kind in bundle.kinds:  # Argo CD's CRDs are full of prose; none is kept
        assert _prose(bundle.schemas(group, kind)) == 0, kind
    assert "x-kubernetes-int-or-string" in text
    assert "x-kubernetes-preserve-unknown-fields" in text
    assert '"enum":' in text
    assert '"required":' in text


def _prose(node: object) -> int:
    """How many description/example texts a schema still holds (field names excepted)."""
    if isinstance(node, list):
        return sum(_prose(item) for item in node)
    if not isinstance(node, dict):
        return 0
    found = sum(1 for key in ("description", "example") if isinstance(node.get(key), str))
    for key, value in node.items():
        children = value.values() if key == "properties" else [value]
        found += sum(_prose(child) for child in children)
    return found


def test_compact_keeps_structure_and_drops_prose() -> None:
    schema = {
        "type": "object",
        "description": "prose",
        "required": ["mode"],
        "properties": {
            "mode": {"type": "string", "enum": ["a", "b"], "description": "x", "example": "a"},
            "description": {"type": "string", "description": "a field named description"},
            "port": {"x-kubernetes-int-or-string": True, "description": "p"},
        },
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert compact(schema) == {
        "type": "object",
        "required": ["mode"],
        "properties": {
            "mode": {"type": "string", "enum": ["a", "b"]},
            "description": {"type": "string"},
            "port": {"x-kubernetes-int-or-string": True},
        },
        "x-kubernetes-preserve-unknown-fields": True,
    }


KUBECTL_LIST = """\
apiVersion: v1
kind: List
items:
- apiVersion: apiextensions.k8s.io/v1
  kind: CustomResourceDefinition
  metadata: {name: widgets.example.com}
  spec:
    group: example.com
    names: {kind: Widget, plural: widgets}
    versions:
    - name: v1
      served: true
      schema: {openAPIV3Schema: {type: object, description: gone}}
    - name: v0
      served: false
      schema: {openAPIV3Schema: {type: object}}
"""


def test_generate_reads_kubectl_lists_and_only_served_versions(tmp_path: Path) -> None:
    (tmp_path / "crds.yaml").write_text(KUBECTL_LIST)
    files = generate(tmp_path, {"example.com": "my cluster, 2026-12-03"})
    assert json.loads(files["example.com_widgets.json"]) == {
        "group": "example.com",
        "kind": "Widget",
        "versions": {"v1": {"type": "object"}},
    }
    assert json.loads(files[INDEX])["sources"] == {"example.com": "my cluster, 2026-12-03"}


def test_generate_refuses_crds_without_a_source(tmp_path: Path) -> None:
    (tmp_path / "crds.yaml").write_text(KUBECTL_LIST)
    with pytest.raises(ConfigError, match=r"--source example\.com=LABEL"):
        generate(tmp_path, {})
    with pytest.raises(ConfigError, match="no CustomResourceDefinition"):
        generate(_empty(tmp_path), {})


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty
