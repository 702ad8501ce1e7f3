"""InferenceService rules: canary needs Knative, vLLM needs a GPU, pools need tolerations.

KServe accepts all of these mistakes: a canary in RawDeployment mode is silently ignored
(kserve#5335), a vLLM predictor without a GPU limit is scheduled and then crashes or
crawls on CPU, and a pool node selector without the pool's toleration leaves the pod
Pending forever.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from nexus.manifests.context import KNATIVE_NODE_FLAGS, SERVERLESS_MODES, LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding

MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
COMPONENTS = ("predictor", "transformer", "explainer")


def deployment_mode(doc: Document, ctx: LintContext) -> str | None:
    """The ISVC's mode: its annotation, else the platform default, else unknown."""
    return doc.annotations.get(MODE_ANNOTATION) or ctx.default_deployment_mode()


def components(doc: Document) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name in COMPONENTS:
        spec = doc.spec.get(name)
        if isinstance(spec, dict):
            yield name, spec


def _containers(predictor: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key, value in predictor.items():
        if key == "containers" and isinstance(value, list):
            for index, container in enumerate(value):
                if isinstance(container, dict):
                    yield f"containers[{index}]", container
        elif isinstance(value, dict) and ("modelFormat" in value or "storageUri" in value):
            yield key, value


def is_vllm(predictor: Mapping[str, Any]) -> bool:
    """A predictor served by vLLM: a vLLM runtime/format, HF with --backend=vllm, or image."""
    for _, container in _containers(predictor):
        fmt = str((container.get("modelFormat") or {}).get("name", "")).lower()
        runtime = str(container.get("runtime", "")).lower()
        args = [str(a) for a in container.get("args") or []]
        image = str(container.get("image", "")).lower()
        if fmt == "vllm" or "vllm" in runtime or "vllm" in image.rsplit("/", 1)[-1]:
            return True
        if fmt == "huggingface" and any(a in ("--backend=vllm", "vllm") for a in args):
            return True
    return False


def _gpu_limit(predictor: Mapping[str, Any]) -> bool:
    for _, container in _containers(predictor):
        limits = (container.get("resources") or {}).get("limits") or {}
        for resource, amount in limits.items():
            if str(resource).endswith("/gpu") and str(amount) not in ("0", ""):
                return True
    return False


def _check_canary(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    mode = deployment_mode(doc, ctx)
    for name, spec in components(doc):
        if "canaryTrafficPercent" in spec and mode not in SERVERLESS_MODES:
            shown = mode or "unset (and the platform's inferenceservice-config sets no default)"
            yield doc.finding(
                f"spec.{name}.canaryTrafficPercent",
                "canary-needs-serverless",
                f"canaryTrafficPercent is ignored outside Knative (Serverless) mode; "
                f"deployment mode is {shown}",
                f"annotate the InferenceService with {MODE_ANNOTATION}: Knative (named "
                "Serverless before KServe 0.17), or use spec.canary[] for Standard mode",
            )


def _check_vllm_gpu(doc: Document) -> Iterator[Finding]:
    predictor = doc.spec.get("predictor")
    if isinstance(predictor, dict) and is_vllm(predictor) and not _gpu_limit(predictor):
        yield doc.finding(
            "spec.predictor",
            "vllm-needs-gpu",
            "vLLM predictor has no GPU limit, so it can be scheduled on a node without a GPU",
            "set resources.limits['nvidia.com/gpu'] on the model/container (render it from a "
            "GPU pool in platform/pools.yaml)",
        )


def _check_pools(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    for name, spec in components(doc):
        selector = spec.get("nodeSelector") or {}
        tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
        if not isinstance(selector, dict):
            continue
        for pool in ctx.pools.values():
            if not any(selector.get(k) == v for k, v in pool.node_selector.items()):
                continue
            for taint in pool.taints:
                if not any(taint.tolerated_by(t) for t in tolerations):
                    yield doc.finding(
                        f"spec.{name}.tolerations",
                        "pool-toleration",
                        f"node selector picks pool {pool.name!r}, whose nodes are tainted "
                        f"{taint.key}={taint.value or ''}:{taint.effect}, but no toleration "
                        "matches; the pod would stay Pending",
                        f"add the toleration {taint.toleration()}",
                    )


def _check_knative_flags(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    if deployment_mode(doc, ctx) not in SERVERLESS_MODES or ctx.knative_flags_enabled():
        return
    for name, spec in components(doc):
        for key in ("nodeSelector", "tolerations", "affinity"):
            if spec.get(key):
                yield doc.finding(
                    f"spec.{name}.{key}",
                    "knative-podspec-flags",
                    f"{key} in Serverless mode needs Knative's config-features flags, and "
                    "the platform's knative-serving/config-features does not enable them",
                    f"enable {', '.join(KNATIVE_NODE_FLAGS)} in knative-serving/config-features "
                    "(platform/k8s/cluster/config-features.configmap.yaml)",
                )


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        if doc.kind != "InferenceService":
            continue
        findings.extend(_check_canary(doc, ctx))
        findings.extend(_check_vllm_gpu(doc))
        findings.extend(_check_pools(doc, ctx))
        findings.extend(_check_knative_flags(doc, ctx))
    return findings
