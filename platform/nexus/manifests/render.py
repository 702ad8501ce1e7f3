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
    V1EmptyDirVolumeSource,
    V1EnvFromSource,
    V1EnvVar,
    V1EnvVarSource,
    V1ObjectMeta,
    V1ResourceRequirements,
    V1SecretEnvSource,
    V1SecretKeySelector,
    V1SecurityContext,
    V1Toleration,
    V1Volume,
    V1VolumeMount,
)

from nexus.errors import ConfigError
from nexus.manifests import model as m
from nexus.manifests.kserve_codec import dump_yaml, to_dict
from nexus.manifests.model_cache import cache_refusal, render_cache
from nexus.manifests.pools import Pool, quantity_bytes
from nexus.manifests.sizing import PARAMETERS_ANNOTATION

# The CPU worker's entry inside its Bento image (bento/bentofile.yaml), relative to the
# image's working directory, and the port it listens on (also Knative's $PORT).
CPU_WORKER_COMMAND = ("python", "src/bento/cpu_worker.py")
PREDICTOR_PORT = 8080

HEADER = "# Rendered by nexus.manifests.render from a model description; do not edit by hand.\n"

# KServe >= 0.17 rewrites "Serverless" to "Knative" in its defaulting webhook
# (pkg/apis/serving/v1beta1/inference_service_defaults.go), so Argo CD would see a diff on
# every sync; the linter's deployment-mode rule checks this against platform/versions.yaml.
DEPLOYMENT_MODE = "Knative"
# KServe's ingress reconciler gives an InferenceService carrying this label only the
# cluster-local host (pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/
# ingress_reconciler.go); the public entry point is the graphs' VirtualService.
VISIBILITY_LABEL = "networking.knative.dev/visibility"
# The storage initializer takes credentials from this annotation's Secret or from the
# ServiceAccount's secrets, never from the model container's env (KServe
# pkg/credentials/service_account_credentials.go, CreateSecretVolumeAndEnvFromServiceAccount;
# the key is inferenceservice-config's credentials.storageSecretNameAnnotation).
STORAGE_SECRET_ANNOTATION = "serving.kserve.io/storageSecretName"  # noqa: S105 (a key)
# Knative revision annotations for GPU predictors (knative-v1.21.1
# pkg/apis/autoscaling/register.go and pkg/apis/serving/register.go). A GPU pod takes
# minutes to load its weights, so: start a new revision with one pod, keep pods 15 minutes
# after traffic drops instead of reloading on the next burst, average load over 3 minutes
# so bursts do not flap the replica count, and give the storage initializer's download
# plus the runtime's 900 s startup probe 30 minutes before the revision is marked failed
# (Knative's default progress deadline is 600 s, pkg/deployment/config.go).
GPU_PREDICTOR_ANNOTATIONS = {
    "autoscaling.knative.dev/initial-scale": "1",
    "autoscaling.knative.dev/scale-down-delay": "15m",
    "autoscaling.knative.dev/window": "180s",
    "serving.knative.dev/progress-deadline": "1800s",
}
# vLLM's tensor-parallel workers exchange tensors through shared memory; the container
# runtime's default /dev/shm is 64 MiB.
SHM_VOLUME = "dshm"
SHM_PATH = "/dev/shm"  # noqa: S108 (the mount point vLLM uses, not a temp file)
SHM_SIZE = "16Gi"


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


def _scaled(quantity: str, factor: int) -> str:
    """A cpu or memory quantity times ``factor`` (the pool's resources are per GPU)."""
    if factor == 1:
        return quantity
    if quantity.endswith("m"):
        return f"{int(quantity[:-1]) * factor}m"
    if quantity.endswith(("Ki", "Mi", "Gi", "Ti")):
        return f"{quantity_bytes(quantity) * factor // 2**30}Gi"
    return str(int(float(quantity) * factor))


def gpu_count(desc: m.ModelDescription, pool: Pool) -> int:
    if pool.accelerator is None:
        return 0
    return desc.gpus or pool.accelerator.count


def _resources(pool: Pool, gpus: int) -> V1ResourceRequirements:
    factor = max(gpus, 1)
    cpu, memory = _scaled(pool.cpu, factor), _scaled(pool.memory, factor)
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if pool.accelerator is not None:
        limits[pool.accelerator.resource] = str(gpus)
    return V1ResourceRequirements(requests={"cpu": cpu, "memory": memory}, limits=limits)


def _predictor(desc: m.ModelDescription, pool: Pool) -> V1beta1PredictorSpec:
    tolerations = [V1Toleration(**taint.toleration()) for taint in pool.taints] or None
    gpus = gpu_count(desc, pool)
    common: dict[str, Any] = {
        "timeout": desc.timeout_seconds,
        "annotations": dict(GPU_PREDICTOR_ANNOTATIONS) if gpus else None,
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
            resources=_resources(pool, gpus),
        )
        return V1beta1PredictorSpec(containers=[container], **common)
    if pool.accelerator is None:
        raise ConfigError(f"pool {pool.name!r} has no accelerator; vLLM predictors need a GPU pool")
    args = merge_args(pool.vllm_args, desc.vllm_args)
    volume_mounts = None
    if gpus > 1:
        # vLLM shards the weights over every GPU of the pod only when told to.
        args = merge_args(args, [f"--tensor-parallel-size={gpus}"])
        common["volumes"] = [
            V1Volume(
                name=SHM_VOLUME,
                empty_dir=V1EmptyDirVolumeSource(medium="Memory", size_limit=SHM_SIZE),
            )
        ]
        volume_mounts = [V1VolumeMount(name=SHM_VOLUME, mount_path=SHM_PATH)]
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
        resources=_resources(pool, gpus),
        volume_mounts=volume_mounts,
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
        timeout=desc.timeout_seconds,
        min_replicas=desc.min_replicas,
        max_replicas=desc.max_replicas,
        scale_metric="concurrency",
        scale_target=desc.concurrency_target * 4,
        containers=[container],
        # A PodSpec field of the component (kserve aaac4e294 pkg/apis/serving/v1beta1/
        # transformer.go inlines podspec.go's PodSpec; components/transformer.go runs the
        # transformer's pod with it): its mTLS principal is what the authorization
        # component's predictors-from-transformers policy admits.
        service_account_name=m.TRANSFORMER_SERVICE_ACCOUNT,
    )


def render_inference_service(
    desc: m.ModelDescription, pools: Mapping[str, Pool]
) -> V1beta1InferenceService:
    """The complete InferenceService of one model version."""
    pool = pools.get(desc.pool)
    if pool is None:
        raise ConfigError(f"unknown pool {desc.pool!r}; known pools: {sorted(pools)}")
    if desc.cache and (refusal := cache_refusal(pool)) is not None:
        # KServe's webhook would mark the InferenceService cached and mount a volume that
        # never fills (model_cache.py): refuse before anything reaches Git.
        raise ConfigError(f"cannot cache {desc.name!r}: {refusal}")
    annotations = {
        "argocd.argoproj.io/sync-wave": m.ISVC_SYNC_WAVE,
        # canaryTrafficPercent only works with Knative; never depend on the default.
        "serving.kserve.io/deploymentMode": DEPLOYMENT_MODE,
    }
    if desc.storage_uri.startswith("hf://"):
        annotations[STORAGE_SECRET_ANNOTATION] = m.HF_TOKEN_SECRET
    if desc.parameters is not None:
        annotations[PARAMETERS_ANNOTATION] = desc.parameters
    metadata = V1ObjectMeta(
        name=desc.name,
        namespace=desc.namespace,
        labels={
            "app.kubernetes.io/part-of": "nexus",
            "nexus.dev/environment": desc.environment,
            "nexus.dev/pool": pool.name,
            m.RUNTIME_LABEL: desc.runtime,
            VISIBILITY_LABEL: "cluster-local",
        },
        annotations=annotations,
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


def render_cache_yaml(desc: m.ModelDescription, pools: Mapping[str, Pool]) -> str | None:
    """The model cache of ``desc`` (its own file, so that a release re-rendering the
    InferenceService never drops it), or None when ``desc`` asks for none."""
    if not desc.cache:
        return None
    pool = pools.get(desc.pool)
    if pool is None:
        raise ConfigError(f"unknown pool {desc.pool!r}; known pools: {sorted(pools)}")
    return dump_yaml(
        [render_cache(desc, pool, merge_args(pool.vllm_args, desc.vllm_args))], header=HEADER
    )
