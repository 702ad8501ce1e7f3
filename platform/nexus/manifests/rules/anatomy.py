"""Where things are in an InferenceService's predictor, for the rules that look inside it.

A predictor is either a model (``spec.predictor.model``: format, runtime, storageUri, args)
served by a ServingRuntime's container, or custom containers. KServe merges the model's
fields into the runtime's container, runtime args first (KServe
``pkg/controller/v1beta1/inferenceservice/utils/utils.go``, ``MergeRuntimeContainers``:
``append(runtimeContainer.Args, isvcContainer.Args...)``), so a rule that asks "which args
does vLLM get" needs both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document

HUGGINGFACE_RUNTIME = "kserve-huggingfaceserver"


@dataclass(frozen=True, slots=True)
class Serving:
    """The predictor's serving container as the rules see it."""

    field: str  # "spec.predictor.model" or "spec.predictor.containers[0]"
    container: Mapping[str, Any]
    runtime: Mapping[str, Any] | None  # the ServingRuntime document, when known
    runtime_container: Mapping[str, Any] | None

    @property
    def args(self) -> list[str]:
        """Runtime args first, then the model's (KServe appends the model's)."""
        base = list((self.runtime_container or {}).get("args") or [])
        return [str(a) for a in base + list(self.container.get("args") or [])]

    @property
    def own_args(self) -> list[str]:
        return [str(a) for a in self.container.get("args") or []]

    @property
    def model_format(self) -> str:
        return str((self.container.get("modelFormat") or {}).get("name", "")).lower()

    @property
    def runtime_name(self) -> str:
        return str(self.container.get("runtime", ""))

    @property
    def storage_uri(self) -> str:
        uri = self.container.get("storageUri")
        if uri:
            return str(uri)
        for env in self.container.get("env") or []:
            if isinstance(env, dict) and env.get("name") == "STORAGE_URI":
                return str(env.get("value") or "")
        return ""

    @property
    def image(self) -> str:
        return str(self.container.get("image") or (self.runtime_container or {}).get("image", ""))

    def is_huggingface(self) -> bool:
        return self.model_format == "huggingface" or self.runtime_name == HUGGINGFACE_RUNTIME

    def is_plain_vllm(self) -> bool:
        """vLLM's own OpenAI server (not KServe's Hugging Face server with a vLLM backend)."""
        if self.is_huggingface():
            return False
        return self.model_format == "vllm" or is_vllm_image(self.image)

    def gpus(self) -> int:
        limits = (self.container.get("resources") or {}).get("limits") or {}
        for resource, amount in limits.items():
            if str(resource).endswith("/gpu"):
                try:
                    return int(str(amount))
                except ValueError:
                    return 0
        return 0


def is_vllm_image(image: str) -> bool:
    return "vllm" in image.rsplit("/", 1)[-1].split(":", 1)[0]


def _runtime_for(
    model: Mapping[str, Any], runtimes: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    name = model.get("runtime")
    if name:
        return runtimes.get(str(name))
    fmt = str((model.get("modelFormat") or {}).get("name", "")).lower()
    # No runtime named: KServe picks one whose supportedModelFormats lists the format
    # with autoSelect (pkg/apis/serving/v1beta1/predictor_model.go, GetSupportingRuntimes).
    for runtime in runtimes.values():
        for supported in (runtime.get("spec") or {}).get("supportedModelFormats") or []:
            if (
                isinstance(supported, dict)
                and str(supported.get("name", "")).lower() == fmt
                and supported.get("autoSelect")
            ):
                return runtime
    return None


def serving(doc: Document, ctx: LintContext) -> Serving | None:
    """The predictor's serving container, with its runtime when the repository has it."""
    predictor = doc.spec.get("predictor")
    if not isinstance(predictor, dict):
        return None
    model = predictor.get("model")
    if isinstance(model, dict):
        runtime = _runtime_for(model, ctx.runtimes())
        containers = (runtime or {}).get("spec", {}).get("containers") or []
        first = containers[0] if containers and isinstance(containers[0], dict) else None
        return Serving("spec.predictor.model", model, runtime, first)
    containers = predictor.get("containers")
    if isinstance(containers, list) and containers and isinstance(containers[0], dict):
        return Serving("spec.predictor.containers[0]", containers[0], None, None)
    return None


def env_value(container: Mapping[str, Any], name: str) -> tuple[int, str] | None:
    """(index, value) of a plain env var of a container; None when absent."""
    for index, env in enumerate(container.get("env") or []):
        if isinstance(env, dict) and env.get("name") == name:
            return index, str(env.get("value") or "")
    return None


def transformer_container(doc: Document) -> Mapping[str, Any] | None:
    transformer = doc.spec.get("transformer")
    if not isinstance(transformer, dict):
        return None
    containers = transformer.get("containers")
    if isinstance(containers, list) and containers and isinstance(containers[0], dict):
        return containers[0]
    return None


def volume_mounts(container: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]:
    return [m for m in container.get("volumeMounts") or [] if isinstance(m, dict)]
