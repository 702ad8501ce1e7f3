"""What a team says about a model version, and the names the platform gives its parts.

``ModelDescription`` is the whole input of the renderer: the release pipeline builds one
from an MLflow model version (its storage URI and serving tags) and the renderer turns
it into an InferenceService. Validation happens here, so a bad description fails before
anything is rendered or committed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from nexus.errors import ConfigError

Runtime = Literal["huggingface", "vllm"]

TRANSFORMER_IMAGE: Final = "ghcr.io/nexus-serving/nexus-transformer:0.1.0"
ROUTER_IMAGE: Final = "ghcr.io/nexus-serving/nexus-router:0.1.0"
CPU_WORKER_IMAGE: Final = "nexus/cpu-worker:0.1.0"
GATEWAY_CONFIGMAP: Final = "nexus-gateway-config"
# The transformers' account and mesh identity (platform/k8s/base/serviceaccounts.yaml):
# the opt-in authorization component admits callers of predictors by it.
TRANSFORMER_SERVICE_ACCOUNT: Final = "nexus-transformer"
# Names of Secrets (references only, never values).
GATEWAY_SECRET: Final = "nexus-gateway-secrets"  # noqa: S105
HF_TOKEN_SECRET: Final = "hf-token"  # noqa: S105
HF_TOKEN_KEY: Final = "HF_TOKEN"  # noqa: S105
VLLM_RUNTIME: Final = "nexus-vllm"
HUGGINGFACE_RUNTIME: Final = "kserve-huggingfaceserver"
# Argo CD order: platform 0, runtimes 1, InferenceServices 2, InferenceGraphs 3.
ISVC_SYNC_WAVE: Final = "2"
# KServe storage initializer schemes; there is no `models:/`, MLflow must give a real URI.
STORAGE_SCHEMES: Final = ("hf://", "s3://", "gs://", "pvc://", "oci://", "https://")
# Files on this machine, as a local MLflow gives the artifact URI of registered files: only
# the local platform (environment ``local``, ``nexus up``) serves them; no cluster can.
LOCAL_STORAGE_SCHEME: Final = "file://"
LOCAL_ENVIRONMENT: Final = "local"
# OpenAI routes: the Hugging Face server serves them under /openai, plain vLLM at the root.
PREDICTOR_PATH_PREFIX: Final[dict[str, str]] = {"huggingface": "/openai", "vllm": ""}
RUNTIME_LABEL: Final = "nexus.dev/runtime"  # on every rendered InferenceService


def runtime_of(isvc: Mapping[str, Any]) -> Runtime:
    """``vllm`` or ``huggingface``: from the model format, else the Nexus runtime label."""
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    model_format = ((predictor.get("model") or {}).get("modelFormat") or {}).get("name", "")
    if model_format:
        return "vllm" if model_format.lower() == "vllm" else "huggingface"
    labels = (isvc.get("metadata") or {}).get("labels") or {}
    return "huggingface" if labels.get(RUNTIME_LABEL) == "huggingface" else "vllm"


# Knative's max-revision-timeout-seconds default (pkg/apis/config/defaults.go,
# knative-v1.21.1): a component timeout above it is refused by the webhook.
DEFAULT_TIMEOUT_SECONDS: Final = 600

# Knative appends revision suffixes to the name, which must stay a DNS label (63 chars).
ISVC_NAME: Final = re.compile(r"[a-z]([-a-z0-9]{0,43}[a-z0-9])?")  # use with fullmatch


@dataclass(frozen=True, slots=True)
class ModelDescription:
    """One model version to serve; everything else comes from the pool and platform."""

    name: str
    storage_uri: str
    runtime: Runtime
    pool: str
    environment: str
    min_replicas: int = 1
    max_replicas: int = 1
    vllm_args: tuple[str, ...] = ()
    canary_percent: int | None = None
    concurrency_target: int = 8
    namespace: str = "nexus"
    # A custom predictor container speaking the runtime's API (the local CPU worker).
    predictor_image: str | None = None
    transformer_image: str = TRANSFORMER_IMAGE
    model_aliases: tuple[str, ...] = ()
    # GPUs per predictor pod (tensor parallel size); None: the pool's accelerator count.
    gpus: int | None = None
    # spec.<component>.timeout: Knative's total timer per request, streams included.
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    # Parameter count ("70B") from the registry, when the model id does not say it.
    parameters: str | None = None
    # Cache the weights on the pool's nodes (model_cache.py) instead of downloading them
    # for every revision and replica.
    cache: bool = False

    def __post_init__(self) -> None:
        if not ISVC_NAME.fullmatch(self.name):
            raise ConfigError(
                f"model name {self.name!r} must be a lowercase DNS label of at most 45 "
                "characters (Knative adds revision suffixes)"
            )
        if self.runtime not in PREDICTOR_PATH_PREFIX:
            raise ConfigError(f"runtime must be 'huggingface' or 'vllm', got {self.runtime!r}")
        if self.storage_uri.startswith(LOCAL_STORAGE_SCHEME):
            if self.environment != LOCAL_ENVIRONMENT:
                raise ConfigError(
                    f"storage URI {self.storage_uri!r} names files on one machine: only the "
                    f"{LOCAL_ENVIRONMENT!r} environment (nexus up) serves it, not "
                    f"{self.environment!r}; upload the files and register one of "
                    f"{', '.join(STORAGE_SCHEMES)}"
                )
        elif not self.storage_uri.startswith(STORAGE_SCHEMES):
            raise ConfigError(
                f"storage URI {self.storage_uri!r} has no scheme KServe can download from; "
                f"use one of {', '.join(STORAGE_SCHEMES)}"
            )
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ConfigError(
                f"replicas must satisfy 0 <= min ({self.min_replicas}) <= max "
                f"({self.max_replicas}) and max >= 1"
            )
        if self.canary_percent is not None and not 0 <= self.canary_percent <= 100:
            raise ConfigError(f"canary percent must be within 0..100, got {self.canary_percent}")
        if self.concurrency_target < 1:
            raise ConfigError("concurrency target must be at least 1")
        if self.gpus is not None and self.gpus < 1:
            raise ConfigError(f"gpus must be at least 1, got {self.gpus}")
        if not 0 < self.timeout_seconds <= DEFAULT_TIMEOUT_SECONDS:
            raise ConfigError(
                f"timeout {self.timeout_seconds} s must be within 1..{DEFAULT_TIMEOUT_SECONDS}: "
                "Knative refuses a revision timeout above max-revision-timeout-seconds"
            )
        if self.cache and self.predictor_image is not None:
            raise ConfigError("the model cache serves model predictors, not custom containers")
        if self.predictor_image is not None and self.runtime != "vllm":
            raise ConfigError("a custom predictor image must speak the vLLM API (runtime 'vllm')")

    @property
    def path_prefix(self) -> str:
        return PREDICTOR_PATH_PREFIX[self.runtime]
