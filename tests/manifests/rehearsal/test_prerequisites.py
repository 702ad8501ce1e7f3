"""The prerequisites file: the shipped one loads; bad input names the file and the field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from nexus.errors import ConfigError
from nexus.manifests.pools import load_pools
from nexus.manifests.prerequisites import PREREQUISITES_FILE, Prerequisites
from tests.manifests.conftest import REPO_ROOT
from tests.manifests.rehearsal.conftest import Result, Tree

GOOD = """
namespaces:
  - name: nexus
    labels: {istio-injection: enabled}
    createdBy: kubectl create namespace nexus
crds:
  - group: serving.kserve.io
    kinds: [InferenceService]
    installedBy: helm install kserve-crd
secrets:
  - name: nexus-redis
    namespace: nexus
    type: Opaque
    keys: [password]
    create: kubectl -n nexus create secret generic nexus-redis --from-literal=password=x
    check: kubectl -n nexus get secret nexus-redis
nodeLabels:
  - pool: h100
    labels: {kserve/localmodel: worker}
    command: kubectl label node <node> kserve/localmodel=worker
services:
  - name: kube-prometheus-stack-prometheus
    namespace: monitoring
    port: 9090
    role: prometheus
    podLabels: {app.kubernetes.io/name: prometheus}
    sidecar: false
    selects: {release: kube-prometheus-stack}
    install: helm install kube-prometheus-stack
    check: kubectl -n monitoring get svc kube-prometheus-stack-prometheus
"""


def test_the_shipped_file_loads() -> None:
    loaded = Prerequisites.load(REPO_ROOT / PREREQUISITES_FILE)
    assert loaded.namespace("nexus") is not None


def test_every_field(tmp_path: Path) -> None:
    path = tmp_path / "prerequisites.yaml"
    path.write_text(GOOD, encoding="utf-8")
    loaded = Prerequisites.load(path)
    assert loaded.namespaces[0].labels == {"istio-injection": "enabled"}
    assert loaded.crds[0].kinds == ("InferenceService",)
    secret = loaded.secret("nexus", "nexus-redis")
    assert secret is not None
    assert secret.keys == ("password",)
    assert secret.type == "Opaque"
    assert loaded.pool_labels("h100") == {"kserve/localmodel": "worker"}
    (prometheus,) = loaded.of_role("prometheus")
    assert prometheus.port == 9090
    assert prometheus.sidecar is False
    assert prometheus.selects == {"release": "kube-prometheus-stack"}


def test_optional_fields_default(tmp_path: Path) -> None:
    # What platform/prerequisites.yaml may leave out: a secret's type, a service's sidecar,
    # selects and podLabels, a namespace's labels, whole sections.
    path = tmp_path / "prerequisites.yaml"
    path.write_text(
        "namespaces:\n  - {name: mlflow, createdBy: kubectl create namespace mlflow}\n"
        "secrets:\n  - {name: s, namespace: mlflow, keys: [k], create: c, check: k}\n"
        "services:\n  - {name: mlflow, namespace: mlflow, port: 5000, role: mlflow,"
        " install: i, check: c}\n",
        encoding="utf-8",
    )
    loaded = Prerequisites.load(path)
    assert loaded.namespaces[0].labels == {}
    assert loaded.secrets[0].type == "Opaque"
    (mlflow,) = loaded.of_role("mlflow")
    assert (mlflow.sidecar, mlflow.selects, mlflow.pod_labels) == (False, {}, {})
    assert loaded.crds == loaded.node_labels == ()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    port: 9090", "    port: http", "services[0].port must be a port number"),
        ("    role: prometheus", "    role: grafana", "services[0].role must be one of"),
        ("    keys: [password]", "    keys: []", "secrets[0].keys must be a non-empty list"),
        ("    sidecar: false", "    sidecar: maybe", "services[0].sidecar must be true or false"),
        (
            "    createdBy: kubectl create namespace nexus\n",
            "",
            "namespaces[0].createdBy is required",
        ),
        ("nodeLabels:", "nodelabels:", "unknown section(s) nodelabels"),
    ],
)
def test_bad_input_names_file_and_field(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = tmp_path / "prerequisites.yaml"
    path.write_text(GOOD.replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        Prerequisites.load(path)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_lint_reports_a_broken_file(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.replace(PREREQUISITES_FILE, "namespaces:", "namespaces: 3\nbogus:")
    result = lint()
    assert result.code == 1
    (found,) = [f for f in result.findings if f["rule"] == "rehearsal-prerequisites"]
    assert found["path"] == PREREQUISITES_FILE
    assert "unknown section(s) bogus" in found["message"]


def test_pool_allocatable_must_be_quantities(tmp_path: Path) -> None:
    pools = tmp_path / "pools.yaml"
    pools.write_text(
        "pools:\n  big:\n    nodeSelector: {nexus.dev/pool: big}\n"
        "    allocatable: {memory: [1, 2]}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"pools\.big\.allocatable must map resource names"):
        load_pools(pools)
    pools.write_text(
        "pools:\n  big:\n    nodeSelector: {nexus.dev/pool: big}\n"
        "    allocatable: {memory: 1800Gi, nvidia.com/gpu: 8}\n",
        encoding="utf-8",
    )
    assert load_pools(pools)["big"].allocatable == {"memory": "1800Gi", "nvidia.com/gpu": "8"}
