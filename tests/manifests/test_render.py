"""The renderer: complete, deterministic, round-trips through the kserve SDK, and lint-clean."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from nexus.errors import ConfigError
from nexus.manifests.examples import EXAMPLES, example_files
from nexus.manifests.kserve_codec import CodecError, from_dict, to_dict
from nexus.manifests.model import CPU_WORKER_IMAGE, ModelDescription
from nexus.manifests.model_cache import cache_refusal
from nexus.manifests.pools import Pool, load_pools
from nexus.manifests.render import (
    merge_args,
    render_cache_yaml,
    render_inference_service,
    render_yaml,
)
from tests.manifests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def pools() -> dict[str, Pool]:
    return load_pools(REPO_ROOT / "platform" / "pools.yaml")


def _desc(**overrides: object) -> ModelDescription:
    base = ModelDescription(
        name="chat",
        storage_uri="hf://org/chat",
        runtime="huggingface",
        pool="a100",
        environment="prod",
        min_replicas=1,
        max_replicas=3,
        vllm_args=("--max-model-len=4096", "--enforce-eager"),
        canary_percent=25,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def _doc(desc: ModelDescription, pools: dict[str, Pool]) -> dict[str, object]:
    return yaml.safe_load(render_yaml([desc], pools))  # type: ignore[no-any-return]


def test_rendering_twice_is_byte_identical(pools: dict[str, Pool]) -> None:
    descriptions = [d for ds in EXAMPLES.values() for d in ds]
    assert render_yaml(descriptions, pools) == render_yaml(descriptions, pools)


def test_output_round_trips_through_the_kserve_sdk(pools: dict[str, Pool]) -> None:
    for desc in [_desc(), _desc(runtime="vllm", pool="h100", canary_percent=None)]:
        data = to_dict(render_inference_service(desc, pools))
        rebuilt = from_dict(data, "V1beta1InferenceService")
        assert type(rebuilt).__name__ == "V1beta1InferenceService"
        assert to_dict(rebuilt) == data
        assert yaml.safe_load(render_yaml([desc], pools)) == data


def test_codec_refuses_fields_the_sdk_does_not_know() -> None:
    with pytest.raises(CodecError, match="canaryTraficPercent"):
        from_dict(
            {"predictor": {"canaryTraficPercent": 5}}, "V1beta1InferenceServiceSpec", path="spec"
        )


def test_huggingface_runtime_on_a_gpu_pool(pools: dict[str, Pool]) -> None:
    doc = _doc(_desc(), pools)
    meta, spec = doc["metadata"], doc["spec"]
    assert meta["annotations"] == {  # type: ignore[index]
        "argocd.argoproj.io/sync-wave": "2",
        # KServe >= 0.17's name; "Serverless" is rewritten by its webhook (issue 9, fault 6).
        "serving.kserve.io/deploymentMode": "Knative",
        # The storage initializer's credentials (fault 4).
        "serving.kserve.io/storageSecretName": "hf-token",
    }
    # Predictors and transformers get no public host (fault 7).
    assert meta["labels"]["networking.knative.dev/visibility"] == "cluster-local"  # type: ignore[index]
    predictor = spec["predictor"]  # type: ignore[index]
    # Knative's 300 s default would cut every long generation (fault 5).
    assert predictor["timeout"] == 600
    assert spec["transformer"]["timeout"] == 600  # type: ignore[index]
    assert predictor["annotations"] == {
        "autoscaling.knative.dev/initial-scale": "1",
        "autoscaling.knative.dev/scale-down-delay": "15m",
        "autoscaling.knative.dev/window": "180s",
        "serving.knative.dev/progress-deadline": "1800s",
    }
    assert predictor["canaryTrafficPercent"] == 25
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (1, 3)
    assert (predictor["scaleMetric"], predictor["scaleTarget"]) == ("concurrency", 8)
    assert predictor["nodeSelector"] == dict(pools["a100"].node_selector)
    assert predictor["tolerations"] == [t.toleration() for t in pools["a100"].taints]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "huggingface"}
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # pool defaults first, the model's own value replaces the pool's --max-model-len
    assert model["args"] == [
        "--backend=vllm",
        "--dtype=bfloat16",
        "--gpu-memory-utilization=0.85",
        "--max-model-len=4096",
        "--enforce-eager",
    ]
    assert model["env"] == [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "HF_TOKEN"}}}
    ]
    (transformer,) = spec["transformer"]["containers"]  # type: ignore[index]
    assert transformer["args"] == ["--model_name", "chat"]
    assert transformer["env"] == [{"name": "GATEWAY_PREDICTOR_PATH_PREFIX", "value": "/openai"}]
    assert transformer["envFrom"] == [
        {"configMapRef": {"name": "nexus-gateway-config"}},
        {"secretRef": {"name": "nexus-gateway-secrets"}},
    ]


def test_vllm_runtime_has_no_path_prefix_and_no_canary_when_not_asked(
    pools: dict[str, Pool],
) -> None:
    doc = _doc(_desc(runtime="vllm", pool="h100", canary_percent=None), pools)
    predictor = doc["spec"]["predictor"]  # type: ignore[index]
    assert "canaryTrafficPercent" not in predictor
    assert predictor["model"]["runtime"] == "nexus-vllm"
    assert "--backend=vllm" not in predictor["model"]["args"]
    (transformer,) = doc["spec"]["transformer"]["containers"]  # type: ignore[index]
    assert transformer["env"] == [{"name": "GATEWAY_PREDICTOR_PATH_PREFIX", "value": ""}]


def test_local_cpu_worker_is_a_custom_predictor_container(pools: dict[str, Pool]) -> None:
    desc = _desc(runtime="vllm", pool="cpu", predictor_image=CPU_WORKER_IMAGE, canary_percent=None)
    predictor = _doc(desc, pools)["spec"]["predictor"]  # type: ignore[index]
    (container,) = predictor["containers"]
    assert container["image"] == "nexus/cpu-worker:0.1.0"
    assert {"name": "STORAGE_URI", "value": "hf://org/chat"} in container["env"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "tolerations" not in predictor


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": "Chat_Model"}, "DNS label"),
        ({"storage_uri": "models:/chat/3"}, "no scheme"),
        ({"min_replicas": 4}, "replicas"),
        ({"canary_percent": 120}, "0..100"),
        ({"runtime": "tgi"}, "runtime"),
        ({"gpus": 0}, "gpus"),
        ({"timeout_seconds": 1300}, "max-revision-timeout-seconds"),
    ],
)
def test_bad_descriptions_fail_before_rendering(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _desc(**overrides)


def test_unknown_pool_and_gpu_runtime_on_cpu_pool_are_refused(pools: dict[str, Pool]) -> None:
    with pytest.raises(ConfigError, match="unknown pool"):
        render_inference_service(_desc(pool="tpu"), pools)
    with pytest.raises(ConfigError, match="no accelerator"):
        render_inference_service(_desc(pool="cpu"), pools)


def test_multi_gpu_predictor_gets_tensor_parallel_shm_and_scaled_resources(
    pools: dict[str, Pool],
) -> None:
    desc = _desc(runtime="vllm", pool="h100", canary_percent=None, gpus=4)
    predictor = _doc(desc, pools)["spec"]["predictor"]  # type: ignore[index]
    model = predictor["model"]
    assert "--tensor-parallel-size=4" in model["args"]
    assert model["resources"]["limits"] == {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "4"}
    assert model["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]
    assert predictor["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}
    ]
    single = _doc(_desc(runtime="vllm", pool="h100", canary_percent=None), pools)
    assert "volumes" not in single["spec"]["predictor"]  # type: ignore[index]


def test_cpu_predictor_gets_no_gpu_autoscaling_annotations(pools: dict[str, Pool]) -> None:
    desc = _desc(runtime="vllm", pool="cpu", predictor_image=CPU_WORKER_IMAGE, canary_percent=None)
    assert "annotations" not in _doc(desc, pools)["spec"]["predictor"]  # type: ignore[index]


def test_merge_args_overrides_by_flag() -> None:
    assert merge_args(["--a=1", "--b=2"], ["--b=3", "--c"]) == ["--a=1", "--b=3", "--c"]


def test_committed_examples_are_what_the_renderer_produces(pools: dict[str, Pool]) -> None:
    files = example_files(pools)
    assert {p.parent.as_posix() for p in files} == {
        "inference_services/prod",
        "inference_services/local",
    }
    for relative, text in files.items():
        committed = (REPO_ROOT / relative).read_text(encoding="utf-8")
        assert committed == text, f"{relative} is stale: python -m nexus.manifests.examples"


def test_cached_model_on_an_untainted_pool_gets_a_namespace_cache_file(
    pools: dict[str, Pool],
) -> None:
    # An H100 pool without taints: the only kind of pool KServe's download Jobs reach.
    open_pools = {**pools, "h100": dataclasses.replace(pools["h100"], taints=())}
    desc = _desc(runtime="vllm", pool="h100", canary_percent=None, gpus=4, cache=True,
                 storage_uri="hf://meta-llama/Llama-3.1-70B-Instruct")  # fmt: skip
    isvc = yaml.safe_load(render_yaml([desc], open_pools))
    cache = yaml.safe_load(render_cache_yaml(desc, open_pools) or "")
    assert cache["kind"] == "LocalModelNamespaceCache"
    assert cache["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"] == "1"
    # KServe matches the cache to the InferenceService by storage URI.
    assert cache["spec"]["sourceModelUri"] == isvc["spec"]["predictor"]["model"]["storageUri"]
    # 70e9 parameters x 2 bytes (bf16) x 1.1 margin = 143.4 GiB, rounded up.
    assert cache["spec"]["modelSize"] == "144Gi"
    assert cache["spec"]["nodeGroups"] == ["nexus-h100"]


@pytest.mark.parametrize("pool", ["h100", "a100"])
def test_cache_refused_on_a_tainted_pool(pools: dict[str, Pool], pool: str) -> None:
    # KServe's download Jobs tolerate no taint (localmodelnode/controller.go launchJob):
    # the cache would never fill and the predictor would mount an empty volume.
    desc = _desc(pool=pool, cache=True, storage_uri="hf://meta-llama/Llama-3.1-8B-Instruct")
    with pytest.raises(ConfigError, match=r"nvidia\.com/gpu=present:NoSchedule"):
        render_yaml([desc], pools)
    with pytest.raises(ConfigError, match="launchJob"):
        render_cache_yaml(desc, pools)


def test_no_shipped_model_is_cached_on_a_pool_the_cache_cannot_fill(
    pools: dict[str, Pool],
) -> None:
    assert not [d.name for ds in EXAMPLES.values() for d in ds
                if d.cache and cache_refusal(pools[d.pool])]  # fmt: skip
    shipped = [p.name for p in (REPO_ROOT / "inference_services").rglob("*.yaml")
               if "LocalModel" in p.read_text(encoding="utf-8")]  # fmt: skip
    assert shipped == []


def test_cache_refused_for_custom_containers() -> None:
    with pytest.raises(ConfigError, match="model cache"):
        _desc(runtime="vllm", pool="cpu", predictor_image=CPU_WORKER_IMAGE, cache=True)
