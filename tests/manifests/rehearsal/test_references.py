"""References: planted in a copy of the tree, each missing or late object fails `nexus lint`."""

from __future__ import annotations

from collections.abc import Callable

from tests.manifests.rehearsal.conftest import Result, Tree
from tests.manifests.rehearsal.workloads import deployment

RULE = "rehearsal-references"
QWEN = "inference_services/prod/inferenceservice.qwen-1-5b.yaml"


def test_secret_created_nowhere(tree: Tree, lint: Callable[[], Result]) -> None:
    env = {"envFrom": [{"secretRef": {"name": "nexus-planted-secret"}}]}
    tree.add("platform/k8s/base", "planted.yaml", [deployment("nexus-planted", container=env)])
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "nexus-planted-secret")
    assert "Deployment nexus/nexus-planted" in found["message"]
    assert "prerequisites.yaml" in found["fix"]


def test_secret_created_at_a_later_wave(tree: Tree, lint: Callable[[], Result]) -> None:
    # The InferenceServices sync at wave 2; a Secret of the graphs' Application comes at 3.
    late = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "nexus-late", "namespace": "nexus"},
        "stringData": {"TOKEN": "x"},
    }
    tree.add("graphs", "secret.nexus-late.yaml", [late])
    tree.replace(
        QWEN,
        "          - name: GATEWAY_MODEL_ALIASES\n",
        "          - name: PLANTED\n            valueFrom:\n              secretKeyRef:\n"
        "                name: nexus-late\n                key: TOKEN\n"
        "          - name: GATEWAY_MODEL_ALIASES\n",
    )
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "nexus/nexus-late")
    assert "creates only at Application nexus-graphs" in found["message"]
    assert found["path"] == QWEN


def test_missing_key(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.replace(QWEN, "              key: HF_TOKEN", "              key: HF_TOKEN_PLANTED")
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "HF_TOKEN_PLANTED")
    assert "InferenceService nexus/qwen-1-5b" in found["message"]


def test_missing_service_account(tree: Tree, lint: Callable[[], Result]) -> None:
    planted = deployment("nexus-planted", serviceAccountName="nexus-planted-account")
    tree.add("platform/k8s/base", "planted.yaml", [planted])
    result = lint()
    assert result.naming(RULE, "ServiceAccount nexus/nexus-planted-account"), result.findings


def test_gateway_credential_in_the_wrong_namespace(tree: Tree, lint: Callable[[], Result]) -> None:
    # Istio reads credentialName in the gateway workload's namespace (istio-system): a TLS
    # Secret in `nexus` does not count.
    tls = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "nexus-planted-tls"},
        "stringData": {"tls.crt": "x", "tls.key": "y"},
    }
    tree.add("platform/k8s/base", "planted.yaml", [tls])
    tree.replace(
        "platform/k8s/base/public.gateway.yaml",
        "credentialName: nexus-public-tls",
        "credentialName: nexus-planted-tls",
    )
    result = lint()
    found = result.first(RULE, "Secret istio-system/nexus-planted-tls")
    assert "Gateway nexus/nexus-public" in found["message"]
    assert "there is one in nexus: the wrong namespace" in found["message"]


def test_pod_monitor_port_no_pod_has(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.replace(
        "platform/k8s/monitoring/routers.podmonitor.yaml",
        "    - port: user-port",
        "    - port: planted-port",
    )
    result = lint()
    found = result.first(RULE, "'planted-port'")
    assert "PodMonitor nexus/nexus-routers" in found["message"]


def test_gateway_credential_of_the_wrong_type(tree: Tree, lint: Callable[[], Result]) -> None:
    opaque = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": "nexus-planted-tls", "namespace": "istio-system"},
        "stringData": {"tls.crt": "x", "tls.key": "y"},
    }
    # platform/k8s/cluster sets no namespace, so the Secret stays in istio-system.
    tree.add("platform/k8s/cluster", "planted.yaml", [opaque])
    tree.replace(
        "platform/k8s/base/public.gateway.yaml",
        "credentialName: nexus-public-tls",
        "credentialName: nexus-planted-tls",
    )
    result = lint()
    found = result.first(RULE, "Secret istio-system/nexus-planted-tls of type kubernetes.io/tls")
    assert "makes it Opaque" in found["message"]


def test_node_group_volume_is_not_the_agents_directory(
    tree: Tree, lint: Callable[[], Result]
) -> None:
    # The tree ships no model cache (the GPU pools are tainted), but a user may add one on
    # the untainted cpu pool; its volume must still be the agent's directory.
    group = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelNodeGroup",
        "metadata": {"name": "planted-group"},
        "spec": {
            "storageLimit": "20Gi",
            "persistentVolumeSpec": {
                "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "20Gi"},
                "local": {"path": "/planted"},
                "storageClassName": "local-storage",
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "nexus.dev/pool", "operator": "In", "values": ["cpu"]}
                                ]
                            }
                        ]
                    }
                },
            },
            "persistentVolumeClaimSpec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "20Gi"}},
                "storageClassName": "local-storage",
            },
        },
    }
    tree.add("platform/k8s/cluster", "planted.yaml", [group])
    result = lint()
    found = result.first(RULE, "LocalModelNodeGroup planted-group")
    assert "at /planted" in found["message"]
    assert "hostPath /models" in found["message"]
