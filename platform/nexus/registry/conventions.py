"""Tag and alias names of the registry, and the validation of a version's serving tags.

A registered model's name is the InferenceService name. Each version says how it is
served through ``serving.*`` tags; releases write their outcome as ``release.*`` tags and
move the ``champion`` (serving 100 %) and ``challenger`` (in canary) aliases. MLflow
stages are deprecated, so nothing here uses them.

Validation builds the same ``ModelDescription`` the renderer takes, so a version that
passes here renders, and a bad value is refused before anything is written to MLflow or
Git.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, cast

from nexus.errors import ConfigError
from nexus.manifests.model import (
    LOCAL_ENVIRONMENT,
    LOCAL_STORAGE_SCHEME,
    PREDICTOR_PATH_PREFIX,
    ModelDescription,
    Runtime,
)
from nexus.manifests.pools import Pool

SERVING_RUNTIME: Final = "serving.runtime"
SERVING_STORAGE_URI: Final = "serving.storage_uri"
SERVING_GPU_POOL: Final = "serving.gpu_pool"
SERVING_MAX_MODEL_LEN: Final = "serving.max_model_len"
SERVING_ARGS: Final = "serving.args"
SERVING_MIN_REPLICAS: Final = "serving.min_replicas"
SERVING_MAX_REPLICAS: Final = "serving.max_replicas"
# Registered-model tags: the model an InferenceGraph falls back to, and the extra public
# names (comma-separated) the model answers for, such as the "chat" a graph's clients send.
SERVING_FALLBACK: Final = "serving.fallback"
SERVING_MODEL_ALIASES: Final = "serving.model_aliases"
# Registered-model tag: the traffic steps of a canary, comma-separated percents ending at
# 100 ("10,25,50,100"); `nexus release --steps` wins over it, its absence means one canary
# step (`--canary-percent`) then 100.
SERVING_CANARY_STEPS: Final = "serving.canary_steps"

# Registered-model tags of the quality gate (``nexus.release.gate``): the artifact URI of the
# evaluation set (JSON, ``nexus registry evaluation-set``) and the gate's thresholds.
QUALITY_EVALUATION_SET: Final = "quality.evaluation_set"
QUALITY_MAX_LOGPROB_DROP: Final = "quality.max_logprob_drop"  # nats per token, default 0.5
QUALITY_MAX_CHECK_DROP: Final = "quality.max_check_drop"  # share of checks, default 0
QUALITY_MIN_EXAMPLES: Final = "quality.min_examples"  # default 1
# Registered-model tags of the gate's optional pairwise judge (``nexus.release.judge``): the
# judge, an OpenAI base URL (http(s)://.../v1) or the name of an InferenceService in the
# release's namespace; the sign test's minimum of decisive comparisons before it may block,
# and its significance level.
QUALITY_JUDGE: Final = "quality.judge"
QUALITY_JUDGE_MIN_EXAMPLES: Final = "quality.judge_min_examples"  # default 10
QUALITY_JUDGE_ALPHA: Final = "quality.judge_alpha"  # in (0, 1), default 0.05

RELEASE_STATUS: Final = "release.status"
RELEASE_GIT_COMMIT: Final = "release.git_commit"
RELEASE_RUN: Final = "release.run"
RELEASE_ANALYSIS: Final = "release.analysis"
RELEASE_ERROR: Final = "release.error"
# The canary's plan (JSON), so the exit handler of a failed run can take it out of traffic.
RELEASE_PLAN: Final = "release.plan"

ReleaseStatus = Literal["canary", "promoted", "rolled_back", "blocked", "failed"]

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"


def canary_steps(raw: str, *, source: str = SERVING_CANARY_STEPS) -> tuple[int, ...]:
    """``"10,25,50,100"`` as ``(10, 25, 50, 100)``; ``ConfigError`` naming ``source`` if invalid.

    Valid: whole percents in 1..100, strictly increasing, at least one canary step below 100,
    and the last one 100 (the promotion).
    """
    try:
        steps = tuple(int(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(
            f"{source}={raw!r} must be comma-separated whole percents, e.g. 10,25,50,100"
        ) from None
    problem = ""
    if any(not 1 <= step <= 100 for step in steps):
        problem = "every step must be within 1..100"
    elif any(later <= earlier for earlier, later in itertools.pairwise(steps)):
        problem = "the steps must increase"
    elif steps[-1] != 100:
        problem = "the last step must be 100 (the promotion)"
    elif len(steps) < 2:
        problem = "at least one canary step must come before 100"
    if problem:
        raise ConfigError(f"{source}={raw!r}: {problem}, e.g. 10,25,50,100")
    return steps


def _int_tag(tags: Mapping[str, str], key: str, default: int | None) -> int | None:
    raw = tags.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"tag {key}={raw!r} must be an integer") from None


def _args_tag(raw: str | None) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"tag {SERVING_ARGS} must be a JSON list of strings: {exc}") from None
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise ConfigError(f"tag {SERVING_ARGS} must be a JSON list of strings, got {raw!r}")
    bad = [a for a in value if not a.startswith("--")]
    if bad:
        raise ConfigError(f"tag {SERVING_ARGS}: every argument is a --flag[=value], got {bad}")
    return tuple(value)


@dataclass(frozen=True, slots=True)
class ServingSpec:
    """What the ``serving.*`` tags of one model version say."""

    storage_uri: str
    runtime: Runtime
    gpu_pool: str
    max_model_len: int | None = None
    args: tuple[str, ...] = ()
    min_replicas: int = 1
    max_replicas: int = 1

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ServingSpec:
        """Parse the tags; a missing or malformed tag raises ``ConfigError`` naming it."""
        missing = [
            key
            for key in (SERVING_STORAGE_URI, SERVING_RUNTIME, SERVING_GPU_POOL)
            if not tags.get(key)
        ]
        if missing:
            raise ConfigError(f"model version lacks the serving tag(s) {', '.join(missing)}")
        runtime = tags[SERVING_RUNTIME]
        if runtime not in PREDICTOR_PATH_PREFIX:
            raise ConfigError(
                f"tag {SERVING_RUNTIME}={runtime!r} must be one of {sorted(PREDICTOR_PATH_PREFIX)}"
            )
        max_model_len = _int_tag(tags, SERVING_MAX_MODEL_LEN, None)
        if max_model_len is not None and max_model_len < 1:
            raise ConfigError(f"tag {SERVING_MAX_MODEL_LEN} must be positive")
        return cls(
            storage_uri=tags[SERVING_STORAGE_URI],
            runtime=cast(Runtime, runtime),
            gpu_pool=tags[SERVING_GPU_POOL],
            max_model_len=max_model_len,
            args=_args_tag(tags.get(SERVING_ARGS)),
            min_replicas=_int_tag(tags, SERVING_MIN_REPLICAS, 1) or 0,
            max_replicas=_int_tag(tags, SERVING_MAX_REPLICAS, 1) or 0,
        )

    def tags(self) -> dict[str, str]:
        """The version tags that describe this spec (the inverse of ``from_tags``)."""
        tags = {
            SERVING_STORAGE_URI: self.storage_uri,
            SERVING_RUNTIME: self.runtime,
            SERVING_GPU_POOL: self.gpu_pool,
            SERVING_MIN_REPLICAS: str(self.min_replicas),
            SERVING_MAX_REPLICAS: str(self.max_replicas),
        }
        if self.max_model_len is not None:
            tags[SERVING_MAX_MODEL_LEN] = str(self.max_model_len)
        if self.args:
            tags[SERVING_ARGS] = json.dumps(list(self.args))
        return tags

    def vllm_args(self) -> tuple[str, ...]:
        """Arguments for the predictor; ``max_model_len`` wins over a pool's default."""
        if self.max_model_len is None:
            return self.args
        return (*self.args, f"--max-model-len={self.max_model_len}")


def environment_of(spec: ServingSpec) -> str:
    """Where a version can be served: ``local`` when its files are on this machine
    (``file://``, a local MLflow's artifact URI), else ``prod``."""
    return LOCAL_ENVIRONMENT if spec.storage_uri.startswith(LOCAL_STORAGE_SCHEME) else "prod"


def validate(
    name: str, spec: ServingSpec, pools: Mapping[str, Pool], *, environment: str = ""
) -> ModelDescription:
    """The description of ``name`` served as ``spec`` in ``environment`` (default: where
    its files can be served, ``environment_of``); ``ConfigError`` if invalid.

    ``ModelDescription`` checks the name, runtime, storage scheme (``file://`` only for
    ``local``) and replicas; the pool must exist and, outside ``local``, carry an
    accelerator because production predictors are vLLM on GPUs. A ``file://`` version
    never reaches production, so locally any pool of ``pools.yaml`` is accepted (the local
    plan serves it on pool ``cpu`` anyway, ``release.resolve``).
    """
    environment = environment or environment_of(spec)
    pool = pools.get(spec.gpu_pool)
    if pool is None:
        raise ConfigError(
            f"tag {SERVING_GPU_POOL}={spec.gpu_pool!r} is not a pool of platform/pools.yaml; "
            f"known pools: {', '.join(sorted(pools))}"
        )
    if pool.accelerator is None and environment != LOCAL_ENVIRONMENT:
        gpu_pools = sorted(p.name for p in pools.values() if p.accelerator is not None)
        raise ConfigError(
            f"tag {SERVING_GPU_POOL}={spec.gpu_pool!r} has no accelerator; "
            f"vLLM predictors need one of {', '.join(gpu_pools)}"
        )
    return ModelDescription(
        name=name,
        storage_uri=spec.storage_uri,
        runtime=spec.runtime,
        pool=spec.gpu_pool,
        environment=environment,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        vllm_args=spec.vllm_args(),
    )
