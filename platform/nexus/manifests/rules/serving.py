"""Serving rules: what KServe, Argo CD and vLLM do to a predictor that the schema allows.

- ``storage-credentials``: the storage initializer gets credentials only from the
  ``serving.kserve.io/storageSecretName`` annotation's Secret or the ServiceAccount's
  secrets (KServe ``pkg/credentials/service_account_credentials.go``,
  ``CreateSecretVolumeAndEnvFromServiceAccount``; injected by
  ``pkg/webhook/admission/pod/storage_initializer_injector.go``), never from the model
  container's env;
- ``deployment-mode``: KServe >= 0.17 rewrites ``Serverless`` to ``Knative``
  (``pkg/apis/serving/v1beta1/inference_service_defaults.go``), so Argo CD sees a diff
  forever unless the manifest says ``Knative`` or an Application ignores the annotation;
- ``gpu-fit``, ``tensor-parallel``, ``dev-shm``: weights fit the GPUs asked for
  (``nexus.manifests.sizing``), vLLM shards over all of them, and multi-GPU pods get a
  memory-backed ``/dev/shm``;
- ``gateway-path-prefix``: the transformer's OpenAI path prefix matches the runtime (KServe's
  Hugging Face server mounts OpenAI routes under ``/openai``, vLLM's own server at the root);
- ``vllm-args``, ``vllm-image-version``: arguments the declared vLLM no longer accepts, and a
  runtime image that is not the declared vLLM.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from nexus.manifests import admission, sizing
from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding
from nexus.manifests.rules.anatomy import (
    Serving,
    env_value,
    is_vllm_image,
    serving,
    transformer_container,
    volume_mounts,
)

STORAGE_SECRET_ANNOTATION = "serving.kserve.io/storageSecretName"  # noqa: S105 (a key)
CREDENTIAL_SCHEMES = ("hf://", "s3://", "gs://")
CREDENTIAL_ENV = frozenset(
    {"HF_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS"}
)
PATH_PREFIX_ENV = "GATEWAY_PREDICTOR_PATH_PREFIX"
SHM_PATH = "/dev/shm"  # noqa: S108 (where NCCL expects shared memory, not a temp file)
# vLLM arguments removed from its CLI: flag -> (first version without it, source, fix).
REMOVED_VLLM_ARGS: Final[dict[str, tuple[tuple[int, ...], str, str]]] = {
    "--disable-log-requests": (
        (0, 12, 0),
        "deprecated by vllm-project/vllm#21739, removed by #29402 in 0.12.0",
        "remove it: request logging is off unless --enable-log-requests is given",
    ),
}


def _check_credentials(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    found = serving(doc, ctx)
    if found is None or not found.storage_uri.startswith(CREDENTIAL_SCHEMES):
        return
    if doc.annotations.get(STORAGE_SECRET_ANNOTATION):
        return
    predictor = doc.spec.get("predictor") or {}
    if predictor.get("serviceAccountName"):
        return  # its secrets reach the initializer; the account lives outside Git
    in_env = sorted(
        str(e.get("name"))
        for e in found.container.get("env") or []
        if isinstance(e, dict) and e.get("name") in CREDENTIAL_ENV
    )
    scheme = found.storage_uri.split("://", 1)[0]
    if in_env:
        yield doc.finding(
            f"metadata.annotations.{STORAGE_SECRET_ANNOTATION}",
            "storage-credentials",
            f"{', '.join(in_env)} is only in the model container's env; the storage "
            f"initializer that downloads {found.storage_uri} never sees it, so gated or "
            "private weights fail with 401/403",
            f"annotate the InferenceService {STORAGE_SECRET_ANNOTATION}: <Secret with "
            f"{in_env[0]}>, or set spec.predictor.serviceAccountName to an account whose "
            "secrets hold it",
        )
    elif scheme == "hf":
        # Buckets may grant access through the node's or pod's identity; the Hub does not.
        yield doc.finding(
            f"metadata.annotations.{STORAGE_SECRET_ANNOTATION}",
            "storage-credentials",
            "no Hugging Face token reaches the storage initializer; only public, ungated "
            "weights will download",
            f"annotate {STORAGE_SECRET_ANNOTATION} or set spec.predictor.serviceAccountName",
            warning=True,
        )


def _argo_ignores_mode(ctx: LintContext) -> bool:
    for app in ctx.of_kind("Application"):
        for entry in app.spec.get("ignoreDifferences") or []:
            if not isinstance(entry, dict) or entry.get("kind") != "InferenceService":
                continue
            paths = [*(entry.get("jqPathExpressions") or []), *(entry.get("jsonPointers") or [])]
            if any("deploymentMode" in str(p) for p in paths):
                return True
    return False


def _check_mode(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    if not ctx.versions:
        return
    given = doc.annotations.get(admission.DEPLOYMENT_MODE_ANNOTATION)
    defaulted = admission.deployment_mode(doc.data, ctx.versions)
    if given is None or given == defaulted or _argo_ignores_mode(ctx):
        return
    yield doc.finding(
        f"metadata.annotations.{admission.DEPLOYMENT_MODE_ANNOTATION}",
        "deployment-mode",
        f"KServe {ctx.versions['kserve']}'s defaulting webhook rewrites {given!r} to "
        f"{defaulted!r}, so Argo CD reports OutOfSync forever and selfHeal re-applies it",
        f"write {defaulted!r}, or ignore .metadata.annotations"
        f'["{admission.DEPLOYMENT_MODE_ANNOTATION}"] in the Application\'s ignoreDifferences',
    )


def _pool_memory(doc: Document, ctx: LintContext) -> tuple[str, int] | None:
    predictor = doc.spec.get("predictor") or {}
    selector = predictor.get("nodeSelector") if isinstance(predictor, dict) else None
    for pool in ctx.pools.values():
        accelerator = pool.accelerator
        if (
            isinstance(selector, dict)
            and pool.selected_by(selector)
            and accelerator is not None
            and accelerator.memory is not None
        ):
            return pool.name, accelerator.memory
    return None


def _parameters(doc: Document, found: Serving) -> float | None:
    raw = doc.annotations.get(sizing.PARAMETERS_ANNOTATION)
    if raw is not None:
        return sizing.parse_parameters(str(raw))
    return sizing.parameters_of(found.storage_uri)


def _check_gpus(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    found = serving(doc, ctx)
    if found is None or not (found.is_plain_vllm() or "--backend=vllm" in found.args):
        return
    gpus = found.gpus()
    if gpus < 1:
        return  # vllm-needs-gpu reports it
    args = found.args
    tp = int(sizing.arg_value(args, "--tensor-parallel-size", "-tp") or 1)
    pp = int(sizing.arg_value(args, "--pipeline-parallel-size", "-pp") or 1)
    if tp * pp != gpus:
        yield doc.finding(
            f"{found.field}.args",
            "tensor-parallel",
            f"the pod gets {gpus} GPU(s) but vLLM uses tensor x pipeline parallel = "
            f"{tp} x {pp} = {tp * pp}",
            f"pass --tensor-parallel-size={gpus // pp} (or ask for {tp * pp} GPUs)",
        )
    if tp * pp > 1 or gpus > 1:
        yield from _check_shm(doc, found)
    pool = _pool_memory(doc, ctx)
    parameters = _parameters(doc, found)
    if pool is None or parameters is None:
        return
    weights = sizing.weights_bytes(parameters, args, found.storage_uri)
    if not sizing.fits(weights, gpus, pool[1], args):
        need = sizing.gpus_needed(weights, pool[1], args)
        usable = sizing.usable_bytes(gpus, pool[1], args)
        yield doc.finding(
            f"{found.field}.resources.limits",
            "gpu-fit",
            f"{parameters / 1e9:g}B parameters at "
            f"{sizing.bytes_per_parameter(args, found.storage_uri):g} bytes each are "
            f"{sizing.gib(weights)} of weights; {gpus} x {sizing.gib(pool[1])} "
            f"({pool[0]}) x --gpu-memory-utilization leaves {sizing.gib(usable)}, and "
            f"weights may take {sizing.WEIGHTS_SHARE:.0%} of it (the rest is KV cache)",
            f"ask for {need} GPUs with --tensor-parallel-size={need}, a larger pool, or a "
            "quantized model",
        )


def _check_shm(doc: Document, found: Serving) -> Iterator[Finding]:
    predictor = doc.spec.get("predictor") or {}
    memory_volumes = {
        str(v.get("name"))
        for v in predictor.get("volumes") or []
        if isinstance(v, dict) and (v.get("emptyDir") or {}).get("medium") == "Memory"
    }
    if not any(
        m.get("mountPath") == SHM_PATH and m.get("name") in memory_volumes
        for m in volume_mounts(found.container)
    ):
        yield doc.finding(
            f"{found.field}.volumeMounts",
            "dev-shm",
            "a multi-GPU vLLM pod exchanges tensors through /dev/shm, which the container "
            "runtime limits to 64 MiB; NCCL fails or crawls",
            "add spec.predictor.volumes[] {name: dshm, emptyDir: {medium: Memory}} and "
            f"mount it at /dev/shm in {found.field}.volumeMounts",
        )


def _check_path_prefix(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    found = serving(doc, ctx)
    container = transformer_container(doc)
    if found is None or container is None:
        return
    if found.is_huggingface():
        expected, what = "/openai", "KServe's Hugging Face server serves OpenAI under /openai"
    elif found.is_plain_vllm():
        expected, what = "", "vLLM's OpenAI server serves /v1 at the root"
    else:
        return
    current = env_value(container, PATH_PREFIX_ENV)
    value = (current[1] if current else "").rstrip("/")
    if value != expected:
        index = current[0] if current else len(container.get("env") or [])
        yield doc.finding(
            f"spec.transformer.containers[0].env[{index}]",
            "gateway-path-prefix",
            f"{PATH_PREFIX_ENV} is {value!r} but {what}, so every proxied call would 404",
            f"set {PATH_PREFIX_ENV} to {expected!r}",
        )


def _vllm_args(
    owner: Document, args: Sequence[Any], field: str, ctx: LintContext
) -> Iterator[Finding]:
    if "vllm" not in ctx.versions:
        return
    declared = admission.parse_version(ctx.versions["vllm"])
    for index, arg in enumerate(args):
        flag = str(arg).split("=", 1)[0]
        removed = REMOVED_VLLM_ARGS.get(flag)
        if removed is not None and declared >= removed[0]:
            yield owner.finding(
                f"{field}[{index}]",
                "vllm-args",
                f"vLLM {ctx.versions['vllm']} has no {flag} ({removed[1]}); the server "
                "exits with 'unrecognized arguments'",
                removed[2],
            )


def _check_runtime(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    for index, container in enumerate(doc.spec.get("containers") or []):
        if not isinstance(container, dict) or not is_vllm_image(str(container.get("image"))):
            continue
        yield from _vllm_args(
            doc, container.get("args") or [], f"spec.containers[{index}].args", ctx
        )
        image = str(container.get("image"))
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if "vllm" in ctx.versions and tag.lstrip("v") != ctx.versions["vllm"]:
            yield doc.finding(
                f"spec.containers[{index}].image",
                "vllm-image-version",
                f"image {image} is not the declared vLLM {ctx.versions['vllm']} "
                "(platform/versions.yaml), so the argument checks describe another vLLM",
                f"use vllm/vllm-openai:v{ctx.versions['vllm']}, or change versions.yaml in "
                "the same commit",
            )


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        if doc.kind in ("ServingRuntime", "ClusterServingRuntime"):
            findings.extend(_check_runtime(doc, ctx))
        elif doc.kind == "InferenceService":
            findings.extend(_check_credentials(doc, ctx))
            findings.extend(_check_mode(doc, ctx))
            findings.extend(_check_gpus(doc, ctx))
            findings.extend(_check_path_prefix(doc, ctx))
            found = serving(doc, ctx)
            if found is not None and found.is_plain_vllm():
                findings.extend(_vllm_args(doc, found.own_args, f"{found.field}.args", ctx))
    return findings
