"""Scheduling: a pod that no pool of platform/pools.yaml admits fails `nexus lint`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.manifests.rehearsal.conftest import Result, Tree
from tests.manifests.rehearsal.workloads import deployment, gpu_pool, placed_on, small_pool

RULE = "rehearsal-scheduling"


def test_taint_not_tolerated(tree: Tree, lint: Callable[[], Result]) -> None:
    pool = gpu_pool(tree)
    planted = deployment("nexus-planted", nodeSelector=placed_on(tree, pool)["nodeSelector"])
    tree.add("platform/k8s/base", "planted.yaml", [planted])
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "Deployment nexus/nexus-planted")
    assert "is not tolerated" in found["message"] or "taint" in found["message"]


def test_pool_taint_the_predictors_do_not_tolerate(tree: Tree, lint: Callable[[], Result]) -> None:
    pool = gpu_pool(tree)
    taint = {"key": "nexus.dev/planted", "value": "yes", "effect": "NoSchedule"}
    tree.edit_yaml(
        "platform/pools.yaml", lambda d: d["pools"][pool].setdefault("taints", []).append(taint)
    )
    result = lint()
    found = result.first(RULE, "nexus.dev/planted=yes:NoSchedule")
    assert "InferenceService nexus/" in found["message"]


def test_selector_matching_no_pool(tree: Tree, lint: Callable[[], Result]) -> None:
    planted = deployment("nexus-planted", nodeSelector={"nexus.dev/pool": "planted-tpu"})
    tree.add("platform/k8s/base", "planted.yaml", [planted])
    result = lint()
    found = result.first(RULE, "Deployment nexus/nexus-planted")
    assert "nexus.dev/pool=planted-tpu" in found["message"]


def _allocatable(tree: Tree, pool: str, values: dict[str, Any]) -> None:
    tree.edit_yaml("platform/pools.yaml", lambda d: d["pools"][pool].update(allocatable=values))


def test_gpus_over_a_node(tree: Tree, lint: Callable[[], Result]) -> None:
    pool = gpu_pool(tree)
    _allocatable(tree, pool, {"nvidia.com/gpu": 8, "memory": "1800Gi", "cpu": "200"})
    gpus = {"resources": {"limits": {"nvidia.com/gpu": "16"}}}
    planted = deployment("nexus-planted", container=gpus, **placed_on(tree, pool))
    tree.add("platform/k8s/base", "planted.yaml", [planted])
    result = lint()
    found = result.first(RULE, "Deployment nexus/nexus-planted")
    assert "more nvidia.com/gpu than a node's allocatable 8" in found["message"]


def test_memory_over_a_node(tree: Tree, lint: Callable[[], Result]) -> None:
    pool = small_pool(tree)
    _allocatable(tree, pool, {"memory": "16Gi", "cpu": "4"})
    memory = {"resources": {"requests": {"memory": "64Gi"}}}
    tree.add("platform/k8s/base", "planted.yaml", [deployment("nexus-planted", container=memory)])
    result = lint()
    found = result.first(RULE, "Deployment nexus/nexus-planted")
    assert "more memory than a node's allocatable 16Gi" in found["message"]


def test_gpu_pod_on_a_pool_without_gpus(tree: Tree, lint: Callable[[], Result]) -> None:
    gpus = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    planted = deployment("nexus-planted", container=gpus, **placed_on(tree, small_pool(tree)))
    tree.add("platform/k8s/base", "planted.yaml", [planted])
    result = lint()
    found = result.first(RULE, "Deployment nexus/nexus-planted")
    assert "which its nodes do not have" in found["message"]


def node_group(name: str, pool: str) -> dict[str, Any]:
    """A LocalModelNodeGroup on the nodes of ``pool``, at the agent's directory /models."""
    term = {"matchExpressions": [{"key": "nexus.dev/pool", "operator": "In", "values": [pool]}]}
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelNodeGroup",
        "metadata": {"name": name},
        "spec": {
            "storageLimit": "200Gi",
            "persistentVolumeSpec": {
                "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "200Gi"},
                "local": {"path": "/models"},
                "storageClassName": "local-storage",
                "nodeAffinity": {"required": {"nodeSelectorTerms": [term]}},
            },
            "persistentVolumeClaimSpec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "200Gi"}},
                "storageClassName": "local-storage",
            },
        },
    }


def test_model_cache_added_on_a_tainted_pool(tree: Tree, lint: Callable[[], Result]) -> None:
    # The tree ships no cache; a user who adds one for llama-8b on the tainted a100 pool
    # gets download Jobs (no tolerations, KServe launchJob) that no a100 node admits.
    cache = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "LocalModelNamespaceCache",
        "metadata": {"name": "planted-llama-8b", "namespace": "nexus"},
        "spec": {
            "sourceModelUri": "hf://meta-llama/Llama-3.1-8B-Instruct",
            "modelSize": "20Gi",
            "nodeGroups": ["planted-a100"],
        },
    }
    tree.add("platform/k8s/cluster", "planted.yaml", [node_group("planted-a100", "a100"), cache])
    result = lint()
    assert result.code == 1
    job = result.first(RULE, "LocalModelNamespaceCache nexus/planted-llama-8b")
    assert "must run on the nodes of pool a100" in job["message"]
    assert "taint nvidia.com/gpu=present:NoSchedule is not tolerated" in job["message"]
    agent = result.first(RULE, "LocalModelNodeGroup planted-a100")
    assert "kserve/localmodel=worker is not a label of its nodes" in agent["message"]


def test_model_cache_on_an_untainted_labelled_pool_fits(
    tree: Tree, lint: Callable[[], Result]
) -> None:
    # On the untainted cpu pool, with its nodes labelled for the agent, both pods fit.
    def label_cpu_nodes(data: dict[str, Any]) -> None:
        data["nodeLabels"].append(
            {"pool": "cpu", "labels": {"kserve/localmodel": "worker"}, "command": "kubectl"}
        )

    tree.edit_yaml("platform/prerequisites.yaml", label_cpu_nodes)
    tree.add("platform/k8s/cluster", "planted.yaml", [node_group("planted-cpu", "cpu")])
    result = lint()
    assert not result.naming(RULE, "planted-cpu")


def test_shipped_pools_declare_capacity(tree: Tree, lint: Callable[[], Result]) -> None:
    # No pool of the shipped pools.yaml has a node with 4 TiB of memory.
    memory = {"resources": {"requests": {"memory": "4Ti"}}}
    tree.add("platform/k8s/base", "planted.yaml", [deployment("nexus-planted", container=memory)])
    result = lint()
    found = result.first(RULE, "Deployment nexus/nexus-planted")
    for pool in ("h100", "a100", "cpu"):
        assert f"pool {pool}: " in found["message"]
    assert "more memory than a node's allocatable" in found["message"]
    assert not [f for f in result.findings if f["path"] == "platform/pools.yaml"]


def test_pool_without_allocatable_is_a_warning(tree: Tree, lint: Callable[[], Result]) -> None:
    pool = gpu_pool(tree)
    _allocatable(tree, pool, {"cpu": "96"})
    result = lint()
    (warning,) = [f for f in result.findings if f["path"] == "platform/pools.yaml"]
    assert warning["severity"] == "warning"
    assert warning["field"] == f"pools.{pool}.allocatable"
    assert "no allocatable memory, nvidia.com/gpu" in warning["message"]
