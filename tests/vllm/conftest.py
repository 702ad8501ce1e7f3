"""One real vLLM engine for the whole tier, reached the way the platform reaches it.

The session builds the tiny Llama from its seed (``vllm/build_model.py``), registers it in
a real MLflow, lets KServe's storage library place the registered artifacts in a revision
folder, and starts vLLM's CPU engine with the ServingRuntime's command line
(``nexus.local.vllm_engine``), a transformer in front. Start-up is about a minute on two
cores, so everything here is session-scoped; tests use their own API keys where state
(token budgets) matters.

The tier needs the vLLM environment (``make vllm``; ``make test`` builds it first). Without
it the tier fails: a skipped tier would pass CI without ever talking to vLLM.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from nexus.local import vllm_model
from nexus.local.storage import StorageInitializer
from nexus.local.vllm_engine import engine_command, engine_env, runtime_container, vllm_python
from nexus.registry.client import Registry, VersionInfo
from tests.router.conftest import Router, router_process
from tests.support.mlflow import mlflow_server
from tests.support.processes import REPO, Managed, free_port, managed, wait_http
from tests.support.servers import Transformer, transformer

MODEL = "tiny"  # the InferenceService name: vLLM serves it (--served-model-name={{.Name}})
REVISION = "tiny-predictor-00001"
KEY = "vllm-tier-key"
TOKEN_KEY = "vllm-tier-tokens"
SETTLE_KEY = "vllm-tier-settle"
ENGINE_START_TIMEOUT = 420.0  # measured 74 s at low load, ~4 min at load average 15-35
# pytest-timeout counts session fixtures in the first test that uses them: MLflow, the build
# and the engine took 287 s at load 15 and passed the project's 300 s limit at load 17-35.
TIER_TIMEOUT = 900
GRAPH = REPO / "graphs" / "inferencegraph.chat-fallback.yaml"
POLICIES = {
    TOKEN_KEY: {"tokens_per_minute": 100_000},
    SETTLE_KEY: {"tokens_per_minute": 100_000},
}
GATEWAY_ENV = {
    "GATEWAY_API_KEYS": f"{KEY},{TOKEN_KEY},{SETTLE_KEY}",
    "GATEWAY_API_KEY_POLICIES": orjson.dumps(POLICIES).decode(),
    "GATEWAY_MODEL_ALIASES": "chat",
    "GATEWAY_PREDICTOR_PATH_PREFIX": "",
    "GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
    "GATEWAY_TOKENS_PER_MINUTE": "100000000",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUT))


@dataclass
class Engine:
    port: int
    process: Managed
    folder: Path
    version: VersionInfo
    artifacts: list[str]
    start_seconds: float

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def vllm_env() -> Path:
    python = vllm_python(REPO)
    if not python.exists():
        pytest.fail(f"the vLLM environment {python} is missing: run `make vllm` (make test does)")
    return python


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, vllm_env: Path) -> vllm_model.TinyModel:
    return vllm_model.build(vllm_env, REPO, tmp_path_factory.mktemp("tiny") / "model")


def _register(tmp: Path, model: vllm_model.TinyModel) -> tuple[VersionInfo, list[str]]:
    """Register the model in a real MLflow; return the version and its artifact paths."""
    with mlflow_server(tmp, timeout=180) as url:
        registry = Registry.connect(url)
        version = vllm_model.register(registry, model)
        run_id = version.source.split("/")[-3]
        from mlflow import MlflowClient

        client = MlflowClient(url)
        artifacts = sorted(a.path for a in client.list_artifacts(run_id, "model"))
    return version, artifacts


@pytest.fixture(scope="session")
def vllm_engine(
    tmp_path_factory: pytest.TempPathFactory, vllm_env: Path, tiny_model: vllm_model.TinyModel
) -> Iterator[Engine]:
    tmp = tmp_path_factory.mktemp("vllm")
    version, artifacts = _register(tmp, tiny_model)
    storage = StorageInitializer(python=vllm_env, root=tmp / "revisions")
    folder = asyncio.run(storage.place(version.tags["serving.storage_uri"], REVISION))
    with engine_process(vllm_env, folder, log=tmp / "vllm.log") as (port, process, elapsed):
        yield Engine(port, process, folder, version, artifacts, elapsed)


@contextlib.contextmanager
def engine_process(
    python: Path, folder: Path, *, log: Path
) -> Iterator[tuple[int, Managed, float]]:
    """vLLM serving ``folder`` as a revision's container runs it: (port, process, start seconds)."""
    container = runtime_container(REPO)
    port = free_port()
    command = engine_command(container, python=python, model_dir=folder, name=MODEL,
                             port=port, cpu=True)  # fmt: skip
    started = time.monotonic()
    with managed(command, log=log, env=engine_env(container, cpu=True),
                 ready_url=f"http://127.0.0.1:{port}/v1/models",
                 timeout=ENGINE_START_TIMEOUT) as process:  # fmt: skip
        yield port, process, time.monotonic() - started


@pytest.fixture(scope="session")
def vllm_gateway(
    tmp_path_factory: pytest.TempPathFactory, vllm_engine: Engine
) -> Iterator[Transformer]:
    tmp = tmp_path_factory.mktemp("vllm-gateway")
    with transformer(tmp, model=MODEL, predictor_host=vllm_engine.host, env=GATEWAY_ENV) as gw:
        wait_http(f"{gw.url}/v2/health/live", timeout=30)
        yield gw


@pytest.fixture(scope="session")
def graph(tmp_path_factory: pytest.TempPathFactory, vllm_gateway: Transformer) -> Iterator[Router]:
    """The repository's fallback graph, its primary mapped to the transformer before vLLM.

    The fallback's host maps to a closed port: an answer that came from it would be a
    transport error, so every good answer here is vLLM's through the primary step.
    """
    tmp: Path = tmp_path_factory.mktemp("vllm-graph")
    hosts = [
        "--host-map", f"llama-8b.nexus.svc.cluster.local=127.0.0.1:{vllm_gateway.port}",
        "--host-map", "qwen-1-5b.nexus.svc.cluster.local=127.0.0.1:9",
    ]  # fmt: skip
    env = {"PROPAGATE_HEADERS": "Authorization,X-Api-Key,X-Request-Id,traceparent"}
    with router_process(tmp, graph_file=GRAPH, env=env, args=hosts) as router:
        yield router
