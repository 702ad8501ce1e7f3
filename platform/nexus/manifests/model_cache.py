"""A KServe model cache for a model version, so revisions and replicas skip the download.

KServe 0.21 caches weights on nodes with ``LocalModelNamespaceCache`` (namespaced; the
cluster-scoped ``LocalModelCache`` works the same way): its localmodel controller downloads
``sourceModelUri`` once onto every node of the listed ``LocalModelNodeGroup`` s, and the
InferenceService defaulting webhook labels each InferenceService whose ``storageUri``
matches, after which the pod webhook mounts the node's copy instead of running the storage
initializer (KServe ``pkg/apis/serving/v1beta1/inference_service_defaults.go``,
``setLocalModelLabel``; ``pkg/webhook/admission/pod/storage_initializer_injector.go``). The
download Job runs in the controller's job namespace (``kserve-localmodel-jobs``) with the
named ServiceAccount's secrets (``pkg/controller/v1alpha1/localmodelnode/controller.go``).

Only on pools without ``NoSchedule``/``NoExecute`` taints (read at kserve/kserve
``aaac4e294``, identical at ``v0.20.0``): the download Job's pod carries a
``kubernetes.io/hostname`` node selector and no tolerations
(``pkg/controller/v1alpha1/localmodelnode/controller.go``, ``launchJob``), and the node
agent DaemonSet selects ``kserve/localmodel: worker`` with no tolerations unless the chart
is given some (``charts/kserve-localmodel-resources/values.yaml``,
``localmodelnode.controller.tolerations: []``). On a tainted GPU node neither runs, the
cache never fills, and the webhook still labels the InferenceService as cached: its
predictor mounts the empty PersistentVolume without a storage initializer and crash-loops.
Tolerating the Job needs a patched controller, and untainting GPU nodes lets any pod take
them, so Nexus keeps its GPU pools tainted and uncached; every pool of ``platform/pools.yaml``
is tainted or CPU-only today, and the renderer refuses ``cache`` there (``cache_refusal``).
"""

from __future__ import annotations

import math
from typing import Any, Final

from kserve.models import V1alpha1LocalModelNamespaceCache, V1alpha1LocalModelNamespaceCacheSpec
from kubernetes.client import V1ObjectMeta

from nexus.errors import ConfigError
from nexus.manifests import model as m
from nexus.manifests import sizing
from nexus.manifests.kserve_codec import to_dict
from nexus.manifests.pools import Pool

# platform/k8s/model-cache/: one LocalModelNodeGroup per GPU pool, and the account whose
# secrets (the Hugging Face token) the download Job gets.
NODE_GROUP_PREFIX: Final = "nexus-"
DOWNLOADER_ACCOUNT: Final = "nexus-model-downloader"
# Before the InferenceServices of the same Application (wave 2): the webhook only labels an
# InferenceService for a cache that exists when it is admitted.
CACHE_SYNC_WAVE: Final = "1"
# Tokenizer, config and safetensors index files come on top of the weights.
SIZE_MARGIN: Final = 1.1
# The node agent mounts this hostPath (charts/kserve-localmodel-resources/files/
# resources.yaml, DaemonSet kserve-localmodelnode-agent, volume `models`) and the download
# Job writes under the PersistentVolume of the node group: the two are the same directory
# only when a node group's local PV path is this one (KServe's own TODO in
# pkg/controller/v1alpha1/localmodelnode/platform_default.go says nothing checks it).
AGENT_HOST_PATH: Final = "/models"
# The agent DaemonSet's node selector (same file): nodes of a cached pool carry it.
AGENT_NODE_LABEL: Final = ("kserve/localmodel", "worker")
# Taint effects that keep a pod without a matching toleration off a node.
BLOCKING_EFFECTS: Final = frozenset({"NoSchedule", "NoExecute"})


def cache_refusal(pool: Pool) -> str | None:
    """Why KServe's model cache cannot fill on ``pool``'s nodes, or None when it can."""
    blocking = [t for t in pool.taints if t.effect in BLOCKING_EFFECTS]
    if not blocking:
        return None
    taints = ", ".join(f"{t.key}={t.value or ''}:{t.effect}" for t in blocking)
    return (
        f"pool {pool.name!r} is tainted {taints}: KServe's model-cache download Jobs carry "
        "only a kubernetes.io/hostname node selector and no tolerations (localmodelnode/"
        "controller.go launchJob), so the cache never fills and the cached predictor starts "
        "on an empty volume; serve this model without `cache`"
    )


def node_group(pool: Pool) -> str:
    return f"{NODE_GROUP_PREFIX}{pool.name}"


def model_size(desc: m.ModelDescription, args: list[str]) -> str:
    """The cache's ``modelSize`` (whole GiB), from the weights' size."""
    parameters = (
        sizing.parse_parameters(desc.parameters) if desc.parameters else None
    ) or sizing.parameters_of(desc.storage_uri)
    if parameters is None:
        raise ConfigError(
            f"cannot size the model cache of {desc.name!r}: the model id names no parameter "
            "count; give `parameters` (e.g. '70B')"
        )
    weights = sizing.weights_bytes(parameters, args, desc.storage_uri)
    return f"{math.ceil(weights * SIZE_MARGIN / 2**30)}Gi"


def render_cache(desc: m.ModelDescription, pool: Pool, args: list[str]) -> dict[str, Any]:
    """The ``LocalModelNamespaceCache`` document of ``desc`` on ``pool``'s node group."""
    refusal = cache_refusal(pool)
    if refusal is not None:
        raise ConfigError(f"cannot cache {desc.name!r}: {refusal}")
    cache = V1alpha1LocalModelNamespaceCache(
        api_version="serving.kserve.io/v1alpha1",
        kind="LocalModelNamespaceCache",
        metadata=V1ObjectMeta(
            name=desc.name,
            namespace=desc.namespace,
            labels={"app.kubernetes.io/part-of": "nexus"},
            annotations={"argocd.argoproj.io/sync-wave": CACHE_SYNC_WAVE},
        ),
        spec=V1alpha1LocalModelNamespaceCacheSpec(
            source_model_uri=desc.storage_uri,
            model_size=model_size(desc, args),
            node_groups=[node_group(pool)],
            service_account_name=DOWNLOADER_ACCOUNT,
        ),
    )
    data: dict[str, Any] = to_dict(cache)
    return data
