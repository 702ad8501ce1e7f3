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
