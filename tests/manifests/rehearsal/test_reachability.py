"""Reachability: a policy that cuts a needed path fails `nexus lint`, naming the policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nexus.manifests.rehearsal.reachability import GATE_CALLS
from nexus.release.evaluation import COMPLETIONS
from nexus.release.judge import CHAT_COMPLETIONS, MODELS
from tests.manifests.rehearsal.conftest import Result, Tree

RULE = "rehearsal-reachability"
# A folder of the platform Application whose kustomization sets no namespace, so a planted
# document keeps its own (monitoring, istio-system).
UNNAMESPACED = "platform/k8s/cluster"
PROMETHEUS = {
    "name": "kube-prometheus-stack-prometheus",
    "namespace": "monitoring",
    "port": 9090,
    "role": "prometheus",
    "podLabels": {"app.kubernetes.io/name": "prometheus"},
    "sidecar": False,
    "selects": {"release": "kube-prometheus-stack"},
    "install": "helm install kube-prometheus-stack ...",
    "check": "kubectl -n monitoring get svc kube-prometheus-stack-prometheus",
}


def with_prometheus_without_sidecar(tree: Tree) -> None:
    """The prerequisites name a Prometheus without sidecar and a `nexus` in the mesh."""

    def change(data: dict[str, Any]) -> None:
        services = [s for s in data.get("services") or [] if s.get("role") != "prometheus"]
        data["services"] = [*services, PROMETHEUS]
        namespaces = data.setdefault("namespaces", [])
        for name in ("monitoring", "nexus"):
            if not any(n["name"] == name for n in namespaces):
                namespaces.append({"name": name, "labels": {}, "createdBy": "test"})
        nexus = next(n for n in namespaces if n["name"] == "nexus")
        nexus["labels"] = {**(nexus.get("labels") or {}), "istio-injection": "enabled"}

    tree.edit_yaml("platform/prerequisites.yaml", change)


def test_network_policy_cuts_prometheus(tree: Tree, lint: Callable[[], Result]) -> None:
    with_prometheus_without_sidecar(tree)
    # Prometheus' own namespace lets it out only to the API server's port.
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "planted-egress", "namespace": "monitoring"},
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 443}]}],
        },
    }
    tree.add(UNNAMESPACED, "planted.yaml", [policy])
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "NetworkPolicy monitoring/planted-egress")
    assert "Prometheus monitoring/kube-prometheus-stack-prometheus" in found["message"]
    assert "port 9091" in found["message"]


def test_authorization_policy_admits_prometheus_by_namespace(
    tree: Tree, lint: Callable[[], Result]
) -> None:
    with_prometheus_without_sidecar(tree)
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "planted-scrapes"},
        "spec": {
            "selector": {"matchLabels": {"component": "transformer"}},
            "action": "ALLOW",
            "rules": [
                {
                    "from": [{"source": {"namespaces": ["monitoring"]}}],
                    "to": [{"operation": {"methods": ["GET"], "paths": ["/metrics"]}}],
                }
            ],
        },
    }
    tree.add("platform/k8s/base", "planted.yaml", [policy])
    result = lint()
    found = result.first(RULE, "Prometheus monitoring/kube-prometheus-stack-prometheus (it has")
    assert "AuthorizationPolicy nexus/planted-scrapes" in found["message"]
    assert "no sidecar, so no mTLS identity" in found["message"]
    assert "needs no mTLS identity" in found["fix"]


def test_network_policy_cuts_the_ingress_gateway(tree: Tree, lint: Callable[[], Result]) -> None:
    # The gateway may only talk to istiod: Knative's requests never reach a router.
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "planted-gateway-egress", "namespace": "istio-system"},
        "spec": {
            "podSelector": {"matchLabels": {"istio": "ingressgateway"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 15012}]}],
        },
    }
    tree.add(UNNAMESPACED, "planted.yaml", [policy])
    result = lint()
    found = result.first(RULE, "NetworkPolicy istio-system/planted-gateway-egress")
    assert found["message"].startswith("the Istio ingress gateway")
    assert "the router pod of InferenceGraph nexus/chat-split-fallback" in found["message"]


def test_policy_selecting_no_pod_cuts_nothing(tree: Tree, lint: Callable[[], Result]) -> None:
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "planted-selects-nothing"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "planted-nothing"}},
            "policyTypes": ["Ingress", "Egress"],
        },
    }
    tree.add("platform/k8s/base", "planted.yaml", [policy])
    result = lint()
    assert not result.naming(RULE, "planted-selects-nothing")


def test_network_policy_cuts_the_release_gate(tree: Tree, lint: Callable[[], Result]) -> None:
    # With a sidecar (the authorization component) the gate's step pod reaches the
    # predictors itself, so their NetworkPolicy must admit it, not only the gateway.
    tree.replace(
        "platform/k8s/base/networkpolicies.yaml",
        "              kubernetes.io/metadata.name: kubeflow\n",
        "              kubernetes.io/metadata.name: elsewhere\n",
    )
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "the pipeline step pod of ServiceAccount kubeflow/nexus-release")
    assert found["message"].startswith("with component authorization included")
    assert "NetworkPolicy nexus/predictors-from-transformers" in found["message"]
    assert "the release pipeline's quality gate: POST /v1/completions" in found["message"]


def test_gate_calls_are_what_the_release_pipeline_asks() -> None:
    # The release package sits above the rehearsal (lint-imports layers): both read edge.wire.
    asked = {("POST", COMPLETIONS), ("POST", CHAT_COMPLETIONS), ("GET", MODELS)}
    assert set(GATE_CALLS) == {(method, f"/v1{path}") for method, path in asked}
