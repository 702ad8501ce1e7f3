"""Bad registry values are refused before anything is written; the wait is always bounded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from nexus.cli import main
from nexus.errors import ReleaseError, VersionNotFound
from nexus.manifests.pools import load_pools
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.gitops import publish
from nexus.release.resolve import default_pools_file, plan_release
from nexus.release.run import run_inline
from nexus.release.wait import HttpStatus, wait_rollout
from tests.release.conftest import Mlflow, StatusApi, git


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gpu-pool", "tpu"], "not a pool of platform/pools.yaml"),
        (["--gpu-pool", "cpu"], "has no accelerator"),
        (["--storage-uri", "models:/m/1"], "no scheme KServe can download from"),
        (["--args", "--dtype=half"], "JSON list of strings"),
        (["--min-replicas", "3", "--max-replicas", "2"], "replicas must satisfy"),
    ],
)
def test_register_refuses_bad_values_before_writing(
    mlflow_server: Mlflow, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    defaults = {"--storage-uri": "hf://acme/m", "--gpu-pool": "a100"}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        defaults[flag] = value
    argv = [
        "registry",
        "register",
        "refused",
        "--runtime",
        "vllm",
        "--tracking-uri",
        mlflow_server.url,
    ]
    argv += [f"{flag}={value}" for flag, value in defaults.items()]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(VersionNotFound):
        Registry.connect(mlflow_server.url).model_tags("refused")


def test_register_writes_validated_tags(mlflow_server: Mlflow) -> None:
    argv = [
        "registry",
        "register",
        "good",
        "--storage-uri",
        "s3://b/good",
        "--runtime",
        "huggingface",
        "--gpu-pool",
        "h100",
        "--max-model-len",
        "8192",
        "--args",
        '["--enable-chunked-prefill"]',
        "--max-replicas",
        "2",
        "--fallback",
        "small",
        "--model-alias",
        "chat",
        "--model-alias",
        "assistant",
        "--tracking-uri",
        mlflow_server.url,
    ]
    assert main(argv) == 0
    registry = Registry.connect(mlflow_server.url)
    info = registry.version("good", "1")
    assert info.source == "s3://b/good"
    spec = c.ServingSpec.from_tags(info.tags)
    assert spec.vllm_args() == ("--enable-chunked-prefill", "--max-model-len=8192")
    assert spec.max_replicas == 2
    assert registry.model_tags("good")[c.SERVING_FALLBACK] == "small"
    # The public names survive into every release's InferenceService.
    assert registry.public_names("good") == ("chat", "assistant")
    plan = plan_release(
        registry,
        model="good",
        version="1",
        environment="prod",
        pools=load_pools(default_pools_file()),
    )
    assert plan.model_aliases == ("chat", "assistant")


def test_invalid_tags_fail_before_any_commit(mlflow_server: Mlflow, gitops_repo: Path) -> None:
    # Written with MLflow's own client, as a team bypassing `nexus registry` might.
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    client.create_registered_model("sneaky")
    client.create_model_version(
        "sneaky",
        source="hf://acme/s",
        tags={
            c.SERVING_STORAGE_URI: "hf://acme/s",
            c.SERVING_RUNTIME: "tensorrt",
            c.SERVING_GPU_POOL: "a100",
        },
    )
    arguments = {
        "model_name": "sneaky",
        "version": "1",
        "environment": "prod",
        "canary_percent": 10,
        "analysis_window_s": 1.0,
        "max_error_ratio": 0.02,
        "max_p95_latency_ratio": 1.5,
        "min_canary_requests": 1,
        "gitops_repo": str(gitops_repo),
        "prometheus_url": "",
        "tracking_uri": mlflow_server.url,
        "status_url": "http://127.0.0.1:9",  # never asked: resolve refuses first
        "namespace": "nexus",
        "wait_timeout_s": 5.0,
    }
    with pytest.raises(ReleaseError, match=r"serving.runtime='tensorrt'"):
        run_inline(arguments)
    assert git("--git-dir", str(gitops_repo), "for-each-ref") == ""  # nothing pushed
    tags = Registry.connect(mlflow_server.url).version("sneaky", "1").tags
    assert tags[c.RELEASE_STATUS] == "failed"
    assert "tensorrt" in tags[c.RELEASE_ERROR]


def test_wait_is_bounded_and_says_why(gitops_repo: Path, status_api: StatusApi) -> None:
    doc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "slow", "namespace": "nexus"},
        "spec": {"predictor": {"model": {"storageUri": "hf://a/b"}}},
    }
    pushed = publish(
        repo_url=str(gitops_repo),
        content=yaml.safe_dump(doc),
        message="m",
        path="inference_services/prod/inferenceservice.slow.yaml",
    )
    status_api.set_ready(False)
    with pytest.raises(ReleaseError, match=r"not done after 2s: not Ready \(RevisionMissing\)"):
        wait_rollout(
            HttpStatus(status_api.url, "nexus", "slow"),
            commit=pushed.commit,
            expect="full",
            percent=0,
            timeout_s=2,
            poll_s=0.2,
        )
    status_api.set_ready(True)
    rollout = wait_rollout(
        HttpStatus(status_api.url, "nexus", "slow"),
        commit=pushed.commit,
        expect="full",
        percent=0,
        timeout_s=5,
        poll_s=0.2,
    )
    assert rollout.traffic == (("slow-predictor-00001", 100),)
    assert rollout.synced_revision == pushed.commit


def test_canary_steps_come_from_the_flag_else_the_models_tag(
    mlflow_server: Mlflow, gitops_repo: Path
) -> None:
    registry = Registry.connect(mlflow_server.url)
    spec = c.ServingSpec(storage_uri="hf://acme/steps", runtime="vllm", gpu_pool="a100")
    pools = load_pools(default_pools_file())
    registry.register("steps", spec, pools)

    def plan(steps: str = "") -> tuple[int, ...]:
        found = plan_release(registry, model="steps", version="1", environment="prod",
                             pools=pools, steps=steps, canary_percent=20)  # fmt: skip
        return found.canary_steps

    assert plan() == (20, 100)  # no tag: one step of --canary-percent, then 100
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    client.set_registered_model_tag("steps", c.SERVING_CANARY_STEPS, "10,25,50,100")
    assert plan() == (10, 25, 50, 100)
    assert plan("20,50,100") == (20, 50, 100)  # the flag wins
    # A bad tag fails the run's first step, before anything is committed.
    client.set_registered_model_tag("steps", c.SERVING_CANARY_STEPS, "50,25,100")
    arguments = {
        "model_name": "steps", "version": "1", "environment": "prod", "analysis_window_s": 1.0,
        "max_error_ratio": 0.02, "max_p95_latency_ratio": 1.5, "min_canary_requests": 1,
        "gitops_repo": str(gitops_repo), "prometheus_url": "", "tracking_uri": mlflow_server.url,
        "status_url": "http://127.0.0.1:9", "wait_timeout_s": 5.0,
    }  # fmt: skip
    with pytest.raises(ReleaseError, match=r"serving.canary_steps='50,25,100': the steps must"):
        run_inline(arguments)
    assert git("--git-dir", str(gitops_repo), "for-each-ref") == ""  # nothing pushed
    tags = registry.version("steps", "1").tags
    assert tags[c.RELEASE_STATUS] == "failed"
    assert tags[c.RELEASE_ERROR].startswith("resolve: ReleaseError: cannot release steps")


def test_files_on_this_machine_release_locally_and_never_to_production(
    mlflow_server: Mlflow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files logged to a run of a local MLflow register by ``runs:/`` or by their ``file://``
    path, with any pool, and release to ``local``; production refuses them, saying why."""
    from nexus.errors import ConfigError
    from nexus.manifests.model import ModelDescription

    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    client = MlflowClient(tracking_uri=mlflow_server.url)
    run = client.create_run(client.create_experiment("on-disk-files")).info
    client.log_artifacts(run.run_id, str(folder), "model")
    stored = f"file://{run.artifact_uri}/model"
    argv = ["registry", "register", "on-disk", "--storage-uri", f"runs:/{run.run_id}/model",
            "--runtime", "vllm", "--gpu-pool", "cpu", "--tracking-uri", mlflow_server.url]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    argv[argv.index(f"runs:/{run.run_id}/model")] = stored
    argv[argv.index("cpu")] = "a100"
    assert main(argv) == 0, capsys.readouterr().err
    registry = Registry.connect(mlflow_server.url)
    pools = load_pools(default_pools_file())
    for version in ("1", "2"):
        info = registry.version("on-disk", version)
        assert (info.source, info.tags[c.SERVING_STORAGE_URI]) == (stored, stored)
        plan = plan_release(registry, model="on-disk", version=version, environment="local",
                            pools=pools)  # fmt: skip
        assert (plan.storage_uri, plan.pool) == (stored, "cpu")
    with pytest.raises(ReleaseError, match="only the 'local' environment \\(nexus up\\) serves"):
        plan_release(registry, model="on-disk", version="2", environment="prod", pools=pools)
    with pytest.raises(ConfigError, match="names files on one machine"):
        ModelDescription(name="m", storage_uri=stored, runtime="vllm", pool="a100",
                         environment="prod")  # fmt: skip
    # Files elsewhere are still checked as production would take them, even locally.
    argv[argv.index(stored)] = "hf://acme/m"
    argv[argv.index("a100")] = "cpu"
    assert main(argv) == 2
    assert "has no accelerator" in capsys.readouterr().err
