"""docs/cluster.md's prerequisites are platform/prerequisites.yaml, and that file is true.

The guide's generated blocks must be what ``nexus.manifests.guide`` writes; every Secret,
service and pool of the prerequisites must appear in the guide; and the prerequisites must
agree with the tree: the Secrets the manifests read, the Prometheus the PodMonitors and the
pipeline expect, the MLflow the pipeline calls, the pools' labels and the versions.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from nexus.errors import ConfigError
from nexus.manifests.guide import (
    GUIDE,
    PREREQUISITES,
    _shell_lines,
    generate,
    generate_repo,
    main,
    parts,
)
from nexus.manifests.pools import load_pools
from nexus.manifests.prerequisites import Prerequisites
from nexus.manifests.versions import load_versions
from nexus.release.pipeline import GIT_SECRET, IN_CLUSTER
from tests.manifests.conftest import REPO_ROOT
from tests.manifests.test_security_manifests import K8S, documents, referenced_secrets

# Labels NVIDIA GPU Feature Discovery puts on GPU nodes; every other pool label is a person's.
FEATURE_DISCOVERY_LABELS = frozenset({"nvidia.com/gpu.product"})


@pytest.fixture(scope="module")
def prereq() -> Prerequisites:
    return Prerequisites.load(REPO_ROOT / PREREQUISITES)


def test_the_guide_is_what_the_generator_writes() -> None:
    current, generated = generate_repo(REPO_ROOT)
    assert current == generated, "docs/cluster.md is stale: python -m nexus.manifests.guide"


def test_every_prerequisite_has_its_place_in_the_guide(prereq: Prerequisites) -> None:
    placed = list(parts((REPO_ROOT / GUIDE).read_text(encoding="utf-8")))
    assert len(placed) == len(set(placed))
    assert {"namespaces", "crds", "nodes", "secrets"} <= set(placed)
    assert {f"service:{s.name}" for s in prereq.services if s.role != "other"} <= set(placed)
    text = (REPO_ROOT / GUIDE).read_text(encoding="utf-8")
    for secret in prereq.secrets:
        assert f"`{secret.namespace}/{secret.name}`" in text
        assert secret.check.split("|")[0].strip() in text


def test_a_changed_prerequisite_makes_the_check_fail(tmp_path: Path) -> None:
    for relative in (PREREQUISITES, GUIDE, Path("platform/pools.yaml")):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, tmp_path / relative)
    assert main([str(tmp_path), "--check"]) == 0
    target = tmp_path / PREREQUISITES
    target.write_text(target.read_text().replace("rand -hex 24", "rand -hex 32"), "utf-8")
    assert main([str(tmp_path), "--check"]) == 1
    assert main([str(tmp_path)]) == 0
    assert "rand -hex 32" in (tmp_path / GUIDE).read_text()
    assert main([str(tmp_path), "--check"]) == 0


def test_the_module_runs_as_a_script() -> None:
    check = subprocess.run(
        [sys.executable, "-m", "nexus.manifests.guide", str(REPO_ROOT), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_bad_input_is_a_precise_error(prereq: Prerequisites, tmp_path: Path) -> None:
    pools = load_pools(REPO_ROOT / "platform" / "pools.yaml")
    block = "<!-- BEGIN GENERATED from platform/prerequisites.yaml: {} -->\n<!-- END GENERATED -->"
    with pytest.raises(ConfigError, match="names no service"):
        generate(block.format("service:nowhere"), prereq, pools)
    with pytest.raises(ConfigError, match="unknown generated block 'secret'"):
        generate(block.format("secret"), prereq, pools)
    broken = tmp_path / "prerequisites.yaml"
    broken.write_text("namespaces: {}\n", "utf-8")
    with pytest.raises(ConfigError, match="namespaces must be a list"):
        Prerequisites.load(broken)


def test_long_commands_wrap_outside_quotes(prereq: Prerequisites) -> None:
    text = (REPO_ROOT / GUIDE).read_text(encoding="utf-8")
    (gateway,) = [s for s in prereq.secrets if s.name == "nexus-gateway-secrets"]
    start = text.index("nexus-gateway-secrets`** (")
    opening = text.index("```sh\n", start) + len("```sh\n")
    block = text[opening : text.index("\n```\n", opening)]
    # The shell sees the same words: join the continuations and the && steps back.
    joined = block.replace(" \\\n  ", " ").replace("\n", " && ")
    assert joined == gateway.create


def test_every_secret_the_tree_reads_is_a_prerequisite(prereq: Prerequisites) -> None:
    listed = {(s.namespace, s.name): s for s in prereq.secrets}
    referenced = referenced_secrets()
    missing = {key: where for key, where in referenced.items() if key not in listed}
    assert missing == {}
    # The keys the manifests read: Redis's password and the Gateway's certificate.
    redis = next(d for d in documents(K8S / "base") if d["kind"] == "Deployment")
    keys = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for container in redis["spec"]["template"]["spec"]["containers"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }
    assert ("nexus", "nexus-redis") in listed
    assert keys <= set(listed[("nexus", "nexus-redis")].keys)
    assert listed[("istio-system", "nexus-public-tls")].type == "kubernetes.io/tls"
    assert set(listed[("istio-system", "nexus-public-tls")].keys) == {"tls.crt", "tls.key"}
    # The release pipeline pushes with this Secret, in the namespace its runs use.
    assert listed[("kubeflow", GIT_SECRET)].type == "kubernetes.io/basic-auth"


def test_the_prometheus_is_the_one_the_tree_expects(prereq: Prerequisites) -> None:
    (prometheus,) = [s for s in prereq.services if s.role == "prometheus"]
    url = urlsplit(IN_CLUSTER["prometheus_url"])
    assert url.hostname == f"{prometheus.name}.{prometheus.namespace}.svc.cluster.local"
    assert url.port == prometheus.port
    monitoring = documents(K8S / "monitoring")
    selected = [d for d in monitoring if d["kind"] in ("PodMonitor", "PrometheusRule")]
    assert selected
    for doc in selected:
        labels = doc["metadata"].get("labels", {})
        assert dict(prometheus.selects).items() <= labels.items(), doc["metadata"]["name"]
    # Without a sidecar, the NetworkPolicies must admit it by its namespace.
    assert not prometheus.sidecar
    assert f"kubernetes.io/metadata.name: {prometheus.namespace}" in (
        K8S / "base" / "networkpolicies.yaml"
    ).read_text(encoding="utf-8")


def test_mlflow_is_where_the_pipeline_looks(prereq: Prerequisites) -> None:
    (mlflow,) = [s for s in prereq.services if s.role == "mlflow"]
    url = urlsplit(IN_CLUSTER["tracking_uri"])
    assert url.hostname == f"{mlflow.name}.{mlflow.namespace}.svc.cluster.local"
    assert url.port == mlflow.port
    # MLflow 3.17 refuses Host headers it is not told about (--allowed-hosts).
    assert f"{url.hostname}:{url.port}" in mlflow.install
    constraints = (REPO_ROOT / "constraints.txt").read_text(encoding="utf-8")
    version = next(line.split("==")[1] for line in constraints.splitlines()
                   if line.startswith("mlflow=="))  # fmt: skip
    assert f"mlflow:v{version}" in mlflow.install


def test_node_labels_are_the_pools_labels(prereq: Prerequisites) -> None:
    pools = load_pools(REPO_ROOT / "platform" / "pools.yaml")
    by_pool = {entry.pool: entry for entry in prereq.node_labels}
    assert set(by_pool) == set(pools)
    for name, pool in pools.items():
        labels = dict(by_pool[name].labels)
        assert labels.items() <= dict(pool.node_selector).items()
        assert set(pool.node_selector) - set(labels) <= FEATURE_DISCOVERY_LABELS
        for key, value in labels.items():
            assert f"{key}={value}" in by_pool[name].command


def test_install_texts_name_the_declared_versions(prereq: Prerequisites) -> None:
    versions = load_versions(REPO_ROOT / "platform" / "versions.yaml")
    crds = {c.group: c.installed_by for c in prereq.crds}
    assert f"--version v{versions['kserve']}" in crds["serving.kserve.io"]
    assert f"knative-v{versions['knative_serving']}" in crds["serving.knative.dev"]
    assert f"argo-cd/v{versions['argocd']}" in crds["argoproj.io"]
    assert f"v{versions['prometheus_operator']}" in crds["monitoring.coreos.com"]
    kfp = next(s for s in prereq.services if s.name == "ml-pipeline")
    assert f"ref={'.'.join(versions['kfp'].split('.')[:2])}." in kfp.install


def test_every_custom_kind_the_tree_ships_is_a_prerequisite(prereq: Prerequisites) -> None:
    served = {(c.group, kind) for c in prereq.crds for kind in c.kinds}
    shipped: set[tuple[str, str]] = set()
    for folder in ("platform/k8s", "inference_services", "graphs", "argocd"):
        for path in (REPO_ROOT / folder).rglob("*.yaml"):
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if isinstance(doc, dict) and "/" in str(doc.get("apiVersion", "")):
                    group = str(doc["apiVersion"]).split("/")[0]
                    if "." in group and not group.endswith(("k8s.io", "config.k8s.io")):
                        shipped.add((group, str(doc["kind"])))
    assert shipped - served == set()


def test_a_long_option_after_a_break_ends_the_line_instead_of_looping() -> None:
    # Each option is longer than a line: every one gets its own line, once.
    long = "x" * 120
    command = f"helm install a b --set one={long} --set two={long} --set three={long}"
    assert _shell_lines(command) == [
        "helm install a b \\",
        f"  --set one={long} \\",
        f"  --set two={long} \\",
        f"  --set three={long}",
    ]
