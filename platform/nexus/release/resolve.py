"""Step 1, resolve: the version exists and its serving tags are valid, before any side effect.

The result is a ``ReleasePlan``. For the ``local`` environment the plan deliberately
ignores the version's GPU pool: the local platform has no GPUs, so it places the model on
pool ``cpu`` with the CPU worker image (which speaks the vLLM API, hence runtime ``vllm``)
while still validating the GPU pool, so a version that releases locally also releases to
production.

A release replaces the whole InferenceService, so it must keep the public model names the
graphs address it by (``GATEWAY_MODEL_ALIASES``: every model a graph routes to answers for
``chat``); without them a released model answers 404 to the graph's requests, which is a
client error and so never falls back. They are the registered model's
``serving.model_aliases`` tag (``nexus registry register --model-alias chat``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from nexus.errors import ConfigError, RegistryError, ReleaseError
from nexus.manifests.model import CPU_WORKER_IMAGE
from nexus.manifests.pools import Pool, load_pools
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.plan import ReleasePlan

LOCAL_ENVIRONMENT: Final = "local"
LOCAL_POOL: Final = "cpu"


POOLS_FILE_ENV: Final = "NEXUS_POOLS_FILE"


def default_pools_file() -> Path:
    """``$NEXUS_POOLS_FILE`` (the release image sets it: an installed package has no
    ``platform/`` beside it), else ``platform/pools.yaml`` of the source checkout."""
    configured = os.environ.get(POOLS_FILE_ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "pools.yaml"


def traffic_steps(
    registry: Registry, model: str, *, steps: str, canary_percent: int
) -> tuple[int, ...]:
    """The canary's percents: ``--steps``, else the model's ``serving.canary_steps`` tag,
    else one step of ``canary_percent`` then 100 (``ConfigError`` when invalid)."""
    if steps:
        return c.canary_steps(steps, source="--steps")
    tagged = registry.model_tags(model).get(c.SERVING_CANARY_STEPS, "")
    if tagged:
        return c.canary_steps(tagged)
    if not 1 <= canary_percent <= 99:
        raise ConfigError(f"canary percent must be within 1..99, got {canary_percent}")
    return (canary_percent, 100)


def plan_release(
    registry: Registry,
    *,
    model: str,
    version: str,
    environment: str,
    pools: Mapping[str, Pool],
    namespace: str = "nexus",
    steps: str = "",
    canary_percent: int = 10,
) -> ReleasePlan:
    """Read the version and the champion; ``ReleaseError`` says what is wrong with them."""
    try:
        info = registry.version(model, version)
        spec = c.ServingSpec.from_tags(info.tags)
        # Locally, a version of files elsewhere is still checked as production would be
        # (a GPU pool); one of files on this machine (file://) can only ever be local.
        where = c.environment_of(spec) if environment == LOCAL_ENVIRONMENT else environment
        description = c.validate(model, spec, pools, environment=where)
        champion = registry.alias(model, c.CHAMPION)
        public = registry.public_names(model)
        percents = traffic_steps(registry, model, steps=steps, canary_percent=canary_percent)
        # An evaluation set attached: the quality gate runs at 0 % (``gate_stage``).
        gated = registry.evaluation_set(model) is not None
    except (ConfigError, RegistryError) as exc:
        raise ReleaseError(f"cannot release {model} version {version}: {exc}") from exc
    plan = ReleasePlan(
        model=model,
        version=info.version,
        environment=environment,
        storage_uri=description.storage_uri,
        runtime=description.runtime,
        pool=description.pool,
        namespace=namespace,
        min_replicas=description.min_replicas,
        max_replicas=description.max_replicas,
        vllm_args=description.vllm_args,
        champion=champion,
        model_aliases=public,
        canary_steps=percents,
        quality_gate=gated,
    )
    if environment == LOCAL_ENVIRONMENT:
        if LOCAL_POOL not in pools:
            raise ReleaseError(f"the local environment needs pool {LOCAL_POOL!r} in pools.yaml")
        plan = dataclasses.replace(
            plan, pool=LOCAL_POOL, runtime="vllm", predictor_image=CPU_WORKER_IMAGE
        )
    try:
        plan.description(canary_percent=None)
    except ConfigError as exc:
        raise ReleaseError(f"cannot release {model} version {version}: {exc}") from exc
    return plan


def resolve_step(
    *,
    tracking_uri: str,
    model: str,
    version: str,
    environment: str,
    namespace: str = "nexus",
    steps: str = "",
    canary_percent: int = 10,
    pools_file: str = "",
) -> str:
    """The KFP component's body: the plan as JSON."""
    try:
        pools = load_pools(Path(pools_file) if pools_file else default_pools_file())
        registry = Registry.connect(tracking_uri)
    except ConfigError as exc:
        raise ReleaseError(str(exc)) from exc
    plan = plan_release(
        registry,
        model=model,
        version=version,
        environment=environment,
        pools=pools,
        namespace=namespace,
        steps=steps,
        canary_percent=canary_percent,
    )
    return plan.to_json()
