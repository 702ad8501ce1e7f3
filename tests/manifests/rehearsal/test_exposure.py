"""Exposure: a way into the cluster besides the public Gateway fails `nexus lint`."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from tests.manifests.rehearsal.conftest import Result, Tree

RULE = "rehearsal-exposure"


def test_graph_without_cluster_local(tree: Tree, lint: Callable[[], Result]) -> None:
    graph = yaml.safe_load(tree.read("graphs/inferencegraph.chat-split.yaml"))
    graph["metadata"]["name"] = "planted-graph"
    graph["metadata"].get("labels", {}).pop("networking.knative.dev/visibility", None)
    tree.add("graphs", "inferencegraph.planted-graph.yaml", [graph])
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "InferenceGraph nexus/planted-graph")
    assert "networking.knative.dev/visibility" in found["fix"]


def test_inference_service_without_cluster_local(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.replace(
        "inference_services/prod/inferenceservice.qwen-1-5b.yaml",
        "    networking.knative.dev/visibility: cluster-local\n",
        "",
    )
    result = lint()
    assert result.naming(RULE, "InferenceService nexus/qwen-1-5b"), result.findings


def _service(kind: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"planted-{kind.lower()}"},
        "spec": {
            "type": kind,
            "selector": {"app.kubernetes.io/name": "nexus-redis"},
            "ports": [{"port": 6379}],
        },
    }


def test_load_balancer_and_node_port_services(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.add("platform/k8s/base", "planted.yaml", [_service("LoadBalancer"), _service("NodePort")])
    result = lint()
    assert result.code == 1
    for name in ("planted-loadbalancer", "planted-nodeport"):
        assert result.naming(RULE, f"Service nexus/{name}"), result.findings


def test_second_gateway_and_route_past_the_public_one(
    tree: Tree, lint: Callable[[], Result]
) -> None:
    gateway = yaml.safe_load(tree.read("platform/k8s/base/public.gateway.yaml"))
    gateway["metadata"]["name"] = "planted-gateway"
    route = yaml.safe_load(tree.read("platform/k8s/base/graphs.virtualservice.yaml"))
    route["metadata"]["name"] = "planted-route"
    route["spec"]["gateways"] = ["knative-serving/knative-ingress-gateway"]
    tree.add("platform/k8s/base", "planted.yaml", [gateway, route])
    result = lint()
    assert result.naming(RULE, "Gateway nexus/planted-gateway"), result.findings
    found = result.first(RULE, "VirtualService nexus/planted-route")
    assert "knative-serving/knative-ingress-gateway" in found["message"]
