"""Model-cache rules: where KServe's local model cache can fill, and where it looks.

Encodes kserve/kserve ``aaac4e294`` (identical at ``v0.20.0``), as
``nexus.manifests.model_cache`` explains:

- ``model-cache-tainted-pool``: a ``LocalModelNodeGroup`` whose PersistentVolume's node
  affinity selects nodes of a pool with a ``NoSchedule``/``NoExecute`` taint, or a
  ``LocalModelNamespaceCache``/``LocalModelCache`` naming such a group: the download Jobs
  carry only a ``kubernetes.io/hostname`` node selector and no tolerations
  (``pkg/controller/v1alpha1/localmodelnode/controller.go``, ``launchJob``), so the
  cache never fills while the webhook marks the InferenceService cached, and its
  predictor starts on an empty volume;
- ``model-cache-path``: the group's local PersistentVolume path must be the node agent's
  hostPath ``/models`` (``charts/kserve-localmodel-resources/files/resources.yaml``), or
  the agent checks and cleans a directory the Jobs never write.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding
from nexus.manifests.model_cache import AGENT_HOST_PATH, NODE_GROUP_PREFIX, cache_refusal
from nexus.manifests.pools import Pool

CACHE_KINDS = ("LocalModelNamespaceCache", "LocalModelCache")
AFFINITY_FIELD = "spec.persistentVolumeSpec.nodeAffinity"


def _term_selects(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a nodeSelectorTerm matches a node carrying ``labels`` (its set operators)."""
    expressions = term.get("matchExpressions")
    if not isinstance(expressions, list) or not expressions:
        return False
    for expression in expressions:
        if not isinstance(expression, dict):
            return False
        key, operator = expression.get("key"), expression.get("operator")
        values = [str(v) for v in expression.get("values") or []]
        present = key in labels
        matched = {
            "In": present and labels.get(str(key)) in values,
            "NotIn": not present or labels.get(str(key)) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }.get(str(operator), False)
        if not matched:
            return False
    return True


def node_group_pools(group: Document, pools: Mapping[str, Pool]) -> list[Pool]:
    """The pools whose nodes the group's PersistentVolume node affinity selects."""
    spec = group.spec.get("persistentVolumeSpec")
    affinity = spec.get("nodeAffinity") if isinstance(spec, dict) else None
    required = affinity.get("required") if isinstance(affinity, dict) else None
    terms = required.get("nodeSelectorTerms") if isinstance(required, dict) else None
    if not isinstance(terms, list):
        return []
    return [
        pool
        for pool in pools.values()
        if any(isinstance(t, dict) and _term_selects(t, pool.node_selector) for t in terms)
    ]


def _check_group(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    for pool in node_group_pools(doc, ctx.pools):
        refusal = cache_refusal(pool)
        if refusal is not None:
            yield doc.finding(
                AFFINITY_FIELD,
                "model-cache-tainted-pool",
                f"the node group selects nodes KServe's cache cannot fill: {refusal}",
                "drop this node group and `cache` from the pool's models, or give the cache "
                "an untainted pool of its own in platform/pools.yaml",
            )
    spec = doc.spec.get("persistentVolumeSpec")
    for source in ("local", "hostPath"):
        volume = spec.get(source) if isinstance(spec, dict) else None
        path = volume.get("path") if isinstance(volume, dict) else None
        if path is not None and str(path).rstrip("/") != AGENT_HOST_PATH:
            yield doc.finding(
                f"spec.persistentVolumeSpec.{source}.path",
                "model-cache-path",
                f"the download Jobs write under {path!r} but KServe's node agent mounts the "
                f"hostPath {AGENT_HOST_PATH!r} (charts/kserve-localmodel-resources/files/"
                "resources.yaml, DaemonSet kserve-localmodelnode-agent): it never sees the "
                "models and reports them missing",
                f"set spec.persistentVolumeSpec.{source}.path: {AGENT_HOST_PATH}",
            )


def _check_cache(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    groups = {d.name: d for d in ctx.of_kind("LocalModelNodeGroup")}
    names: Any = doc.spec.get("nodeGroups")
    for index, name in enumerate(names if isinstance(names, list) else []):
        group = groups.get(str(name))
        if group is not None:
            pools = node_group_pools(group, ctx.pools)
        else:
            # Nexus names a pool's group nexus-<pool> (model_cache.node_group).
            pool = ctx.pools.get(str(name).removeprefix(NODE_GROUP_PREFIX))
            pools = [pool] if pool is not None and str(name).startswith(NODE_GROUP_PREFIX) else []
        for pool in pools:
            refusal = cache_refusal(pool)
            if refusal is not None:
                yield doc.finding(
                    f"spec.nodeGroups[{index}]",
                    "model-cache-tainted-pool",
                    f"node group {name!r} selects nodes KServe's cache cannot fill: {refusal}",
                    "delete this cache (and `cache` from the model's description): the "
                    "InferenceService then downloads its weights with the storage initializer",
                )


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        if doc.kind == "LocalModelNodeGroup":
            findings.extend(_check_group(doc, ctx))
        elif doc.kind in CACHE_KINDS:
            findings.extend(_check_cache(doc, ctx))
    return findings
