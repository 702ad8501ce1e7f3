"""Render an InferenceService from a ``ModelDescription`` with the ``kserve`` SDK classes.

The output is minimal (only what differs from KServe's defaults) and deterministic, so a
Git diff of a release shows exactly what the release changes. Building through the SDK
classes keeps every field name the one KServe knows; ``kserve_codec`` round-trips it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kserve import (
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1ModelFormat,
    V1beta1ModelSpec,
    V1beta1PredictorSpec,
    V1beta1TransformerSpec,
)
from kubernetes.client import (
    V1Capabilities,
    V1ConfigMapEnvSource,
    V1Container,
    V1ContainerPort,
    V1EnvFromSource,
    V1EnvVar,
    V1EnvVarSource,
    V1ObjectMeta,
    V1ResourceRequirements,
    V1SecretEnvSource,
    V1SecretKeySelector,
    V1SecurityContext,
    V1Toleration,
)

from nexus.errors import ConfigError
from nexus.manifests import model as m
from nexus.manifests.kserve_codec import dump_yaml, to_dict
from nexus.manifests.pools import Pool

# The CPU worker's entry inside its Bento image (bento/bentofile.yaml), relative to the
# image's working directory, and the port it listens on (also Knative's $PORT).
CPU_WORKER_COMMAND = ("python", "src/bento/cpu_worker.py")
PREDICTOR_PORT = 8080

HEADER = "# Rendered by nexus.manifests.render from a model description; do not edit by hand.\n"


def merge_args(base: Sequence[str], override: Sequence[str]) -> list[str]:
    """Pool defaults overridden flag by flag (``--flag=value``) by the model's own args."""
    merged = list(base)
    for arg in override:
        flag = arg.split("=", 1)[0]
        for index, existing in enumerate(merged):
            if existing.split("=", 1)[0] == flag:
                merged[index] = arg
                break
        else:
            merged.append(arg)
    return merged


def _hf_token(*, optional: bool) -> V1EnvVar:
    return V1EnvVar(
        name="HF_TOKEN",
        value_from=V1EnvVarSource(
            secret_key_ref=V1SecretKeySelector(
                name=m.HF_TOKEN_SECRET, key=m.HF_TOKEN_KEY, optional=optional or None
            )
        ),
    )


def _resources(pool: Pool) -> V1ResourceRequirements:
    limits: dict[str, str] = {"cpu": pool.cpu, "memory": pool.memory}
    if pool.accelerator is not None:
        limits[pool.accelerator.resource] = str(pool.accelerator.count)
    return V1ResourceRequirements(requests={"cpu": pool.cpu, "memory": pool.memory}, limits=limits)


def _predictor(desc: m.ModelDescription, pool: Pool) -> V1beta1PredictorSpec:
    tolerations = [V1Toleration(**taint.toleration()) for taint in pool.taints] or None
    common: dict[str, Any] = {
        "min_replicas": desc.min_replicas,
        "max_replicas": desc.max_replicas,
        "scale_metric": "concurrency",
        "scale_target": desc.concurrency_target,
        "canary_traffic_percent": desc.canary_percent,
        "node_selector": dict(pool.node_selector) or None,
        "tolerations": tolerations,
    }
    if desc.predictor_image is not None:
        args = [f"--model-name={desc.name}", *desc.vllm_args]
        if desc.predictor_image == m.CPU_WORKER_IMAGE:
            # The Bento image's entrypoint turns flag-only args into `bentoml serve <flags>`,
            # which knows no --model-name; a command is exec'd as given instead.
            args = [*CPU_WORKER_COMMAND, *args, f"--port={PREDICTOR_PORT}"]
        container = V1Container(
            name="kserve-container",
            image=desc.predictor_image,
            args=args,
            # STORAGE_URI on a custom container makes KServe run its storage initializer.
            env=[V1EnvVar(name="STORAGE_URI", value=desc.storage_uri), _hf_token(optional=True)],
            ports=[V1ContainerPort(container_port=PREDICTOR_PORT, protocol="TCP")],
            resources=_resources(pool),
        )
        return V1beta1PredictorSpec(containers=[container], **common)
    if pool.accelerator is None:
        raise ConfigError(f"pool {pool.name!r} has no accelerator; vLLM predictors need a GPU pool")
    args = merge_args(pool.vllm_args, desc.vllm_args)
    if desc.runtime == "huggingface":
        args = ["--backend=vllm", *args]
        model_format, runtime = "huggingface", m.HUGGINGFACE_RUNTIME
    else:
        model_format, runtime = "vLLM", m.VLLM_RUNTIME
    model_spec = V1beta1ModelSpec(
        name=None,
        model_format=V1beta1ModelFormat(name=model_format),
        runtime=runtime,
        storage_uri=desc.storage_uri,
        args=args,
        env=[_hf_token(optional=False)],
        resources=_resources(pool),
    )
    return V1beta1PredictorSpec(model=model_spec, **common)


def _transformer(desc: m.ModelDescription) -> V1beta1TransformerSpec:
    env = [V1EnvVar(name="GATEWAY_PREDICTOR_PATH_PREFIX", value=desc.path_prefix)]
    if desc.model_aliases:
        env.append(V1EnvVar(name="GATEWAY_MODEL_ALIASES", value=",".join(desc.model_aliases)))
    container = V1Container(
        name="kserve-container",
        image=desc.transformer_image,
        # KServe appends --predictor_host and --http_port; --model_name is kept when given.
        args=["--model_name", desc.name],
        env_from=[
            V1EnvFromSource(config_map_ref=V1ConfigMapEnvSource(name=m.GATEWAY_CONFIGMAP)),
            V1EnvFromSource(secret_ref=V1SecretEnvSource(name=m.GATEWAY_SECRET)),
        ],
        env=env,
        resources=V1ResourceRequirements(
            requests={"cpu": "500m", "memory": "512Mi"}, limits={"cpu": "2", "memory": "1Gi"}
        ),
        security_context=V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=V1Capabilities(drop=["ALL"]),
        ),
    )
    return V1beta1TransformerSpec(
        # A transformer is a cheap proxy: it follows the predictor's replica bounds but
        # takes far more concurrent requests per pod.
        min_replicas=desc.min_replicas,
        max_replicas=desc.max_replicas,
        scale_metric="concurrency",
        scale_target=desc.concurrency_target * 4,
        containers=[container],
    )


def render_inference_service(
    desc: m.ModelDescription, pools: Mapping[str, Pool]
) -> V1beta1InferenceService:
    """The complete InferenceService of one model version."""
    pool = pools.get(desc.pool)
    if pool is None:
        raise ConfigError(f"unknown pool {desc.pool!r}; known pools: {sorted(pools)}")
    metadata = V1ObjectMeta(
        name=desc.name,
        namespace=desc.namespace,
        labels={
            "app.kubernetes.io/part-of": "nexus",
            "nexus.dev/environment": desc.environment,
            "nexus.dev/pool": pool.name,
            "nexus.dev/runtime": desc.runtime,
        },
        annotations={
            "argocd.argoproj.io/sync-wave": m.ISVC_SYNC_WAVE,
            # canaryTrafficPercent only works with Knative; never depend on the default.
            "serving.kserve.io/deploymentMode": "Serverless",
        },
    )
    return V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=metadata,
        spec=V1beta1InferenceServiceSpec(
            predictor=_predictor(desc, pool), transformer=_transformer(desc)
        ),
    )


def render_yaml(descriptions: Sequence[m.ModelDescription], pools: Mapping[str, Pool]) -> str:
    """Deterministic YAML of one or more InferenceServices (one document each)."""
    docs = [to_dict(render_inference_service(desc, pools)) for desc in descriptions]
    return dump_yaml(docs, header=HEADER)
