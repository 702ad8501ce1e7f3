"""Scheduling: every pod the tree causes must fit a node of a pool of ``platform/pools.yaml``.

A node of a pool carries the pool's ``nodeSelector`` labels plus the labels people put on
it (prerequisites ``nodeLabels``) and the pool's taints. The scheduler's filters this
encodes (Kubernetes ``pkg/scheduler/framework/plugins``): NodeAffinity (every
``nodeSelector`` label present with that value; ``kubernetes.io/hostname`` is each node's
own, so a Job pinned to a node of a group passes it), TaintToleration (every NoSchedule
and NoExecute taint tolerated, ``pools.Taint.tolerated_by``) and NodeResourcesFit (the sum
of the containers' requests, or limits where no request is given, within one node's
``allocatable``; pools.yaml's optional ``allocatable:``, and a warning when a pool omits
its cpu, memory or GPUs).

A pod that fits nowhere stays Pending: its Deployment passes the progress deadline and is
Degraded, an InferenceService stays not Ready, and a DaemonSet simply has no pod on those
nodes. A pod that must run on given pools (the model cache's node agent and its download
Jobs, which KServe sends to the nodes of each LocalModelNodeGroup) must fit each of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from nexus.manifests.findings import Finding
from nexus.manifests.model_cache import BLOCKING_EFFECTS
from nexus.manifests.pools import Pool, quantity_bytes
from nexus.manifests.prerequisites import PREREQUISITES_FILE
from nexus.manifests.rehearsal.pods import HOSTNAME_LABEL, Pod
from nexus.manifests.rehearsal.tree import Obj, Problem, Tree

RULE: Final = "rehearsal-scheduling"
POOLS_FILE: Final = "platform/pools.yaml"


def _cpu_millis(text: str) -> int:
    return int(float(text[:-1])) if text.endswith("m") else int(float(text) * 1000)


def _amount(resource: str, text: str) -> int:
    """A quantity in comparable units: millicores for cpu, bytes for memory, else a count."""
    if resource == "cpu":
        return _cpu_millis(text)
    if resource in ("memory", "ephemeral-storage"):
        return quantity_bytes(text)
    return int(float(text))


def requests_of(pod: Pod) -> dict[str, int]:
    """What the scheduler reserves: requests, or limits where a resource has no request."""
    total: dict[str, int] = {}
    for container in pod.spec.get("containers") or []:
        resources = container.get("resources") or {}
        asked = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for resource, quantity in asked.items():
            try:
                total[resource] = total.get(resource, 0) + _amount(resource, str(quantity))
            except ValueError:
                continue
    return total


def node_labels(tree: Tree, pool: Pool) -> dict[str, str]:
    return {**pool.node_selector, **tree.prerequisites.pool_labels(pool.name)}


def rejects(tree: Tree, pool: Pool, pod: Pod) -> list[str]:
    """Why no node of ``pool`` admits ``pod`` (empty: one does)."""
    reasons = []
    labels = node_labels(tree, pool)
    for key, value in (pod.spec.get("nodeSelector") or {}).items():
        if key != HOSTNAME_LABEL and labels.get(key) != str(value):
            reasons.append(f"nodeSelector {key}={value} is not a label of its nodes")
    tolerations = [t for t in pod.spec.get("tolerations") or [] if isinstance(t, dict)]
    for taint in pool.taints:
        if taint.effect in BLOCKING_EFFECTS and not any(taint.tolerated_by(t) for t in tolerations):
            reasons.append(f"taint {taint.key}={taint.value or ''}:{taint.effect} is not tolerated")
    asked = requests_of(pod)
    gpu = pool.accelerator.resource if pool.accelerator else None
    for resource, amount in asked.items():
        if resource in ("cpu", "memory", "ephemeral-storage") or amount == 0:
            continue
        if resource != gpu:
            reasons.append(f"it asks for {amount} {resource}, which its nodes do not have")
    for resource, raw in pool.allocatable.items():
        if resource in asked and asked[resource] > _amount(resource, raw):
            reasons.append(f"it asks for more {resource} than a node's allocatable {raw}")
    return reasons


def _stalls(tree: Tree, pod: Pod) -> tuple[Obj, ...]:
    """What waits on the pod: its owner, or for the model cache the InferenceServices whose
    weights it should hold (KServe marks them cached and mounts the node's empty cache
    instead of running the storage initializer: kserve aaac4e294
    ``pkg/apis/serving/v1beta1/inference_service_defaults.go`` ``setLocalModelLabel``)."""
    if pod.owner.kind == "LocalModelNodeGroup":
        caches = [
            c
            for c in tree.of_kind("LocalModelNamespaceCache")
            if pod.owner.name in (c.spec.get("nodeGroups") or [])
        ]
    elif pod.owner.kind == "LocalModelNamespaceCache":
        caches = [pod.owner]
    else:
        return (pod.owner,) if pod.owner.namespace == pod.namespace else ()
    uris = {str(c.spec.get("sourceModelUri")) for c in caches}
    return tuple(
        isvc
        for isvc in tree.of_kind("InferenceService")
        if str(((isvc.spec.get("predictor") or {}).get("model") or {}).get("storageUri")) in uris
    )


def _fix(pod: Pod) -> str:
    return (
        f"give {pod.owner.ref} the nodeSelector and tolerations of a pool of "
        f"platform/pools.yaml (the renderer copies them), ask for what one node has, or "
        f"label the pool's nodes ({PREREQUISITES_FILE} nodeLabels)"
    )


def check_pod(tree: Tree, pod: Pod) -> Iterator[Problem]:
    pools = tree.ctx.pools
    if not pools:
        return
    if pod.pools:
        for name in pod.pools:
            reasons = rejects(tree, pools[name], pod)
            if reasons:
                yield Problem(
                    pod.owner,
                    RULE,
                    f"{pod.describe} must run on the nodes of pool {name}, but no node of it "
                    f"admits it: {'; '.join(reasons)}",
                    _fix(pod),
                    _stalls(tree, pod),
                    f"{pod.describe} cannot run on pool {name}",
                )
        return
    verdicts = {name: rejects(tree, pool, pod) for name, pool in pools.items()}
    if any(not reasons for reasons in verdicts.values()):
        return
    detail = "; ".join(f"pool {name}: {', '.join(r)}" for name, r in verdicts.items())
    yield Problem(
        pod.owner,
        RULE,
        f"{pod.describe} fits no node of any pool of platform/pools.yaml ({detail})",
        _fix(pod),
        _stalls(tree, pod),
        f"{pod.describe} stays Pending (no pool admits it)",
    )


def unchecked_capacity(tree: Tree) -> list[Finding]:
    """A warning for each pool whose ``allocatable`` omits cpu, memory or its GPUs: pods
    that ask for more than such a node has would pass the rehearsal and stay Pending."""
    warnings = []
    for name, pool in tree.ctx.pools.items():
        needed = ["cpu", "memory", *([pool.accelerator.resource] if pool.accelerator else [])]
        missing = [resource for resource in needed if resource not in pool.allocatable]
        if missing:
            warnings.append(
                Finding(
                    POOLS_FILE,
                    0,
                    f"pools.{name}.allocatable",
                    RULE,
                    f"pool {name} declares no allocatable {', '.join(missing)}: pods' requests "
                    "are not checked against what one of its nodes has",
                    "add allocatable (cpu, memory and GPUs of one node) to the pool",
                    severity="warning",
                )
            )
    return warnings


def check(tree: Tree, pods: list[Pod]) -> list[Problem]:
    return [problem for pod in pods for problem in check_pod(tree, pod)]
