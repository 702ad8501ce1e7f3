"""``nexus registry``: versions with validated serving tags; the quality gate's evaluation set."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from nexus.errors import ConfigError
from nexus.manifests.pools import load_pools
from nexus.registry.client import Registry
from nexus.registry.conventions import (
    QUALITY_JUDGE,
    QUALITY_JUDGE_ALPHA,
    QUALITY_JUDGE_MIN_EXAMPLES,
    QUALITY_MAX_CHECK_DROP,
    QUALITY_MAX_LOGPROB_DROP,
    QUALITY_MIN_EXAMPLES,
    SERVING_ARGS,
    ServingSpec,
    validate,
)
from nexus.release.resolve import default_pools_file


def tracking_uri(flag: str, state_dir: Path) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else what ``nexus up`` wrote."""
    if flag:
        return flag
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    endpoints = state_dir / "endpoints.json"
    if endpoints.is_file():
        try:
            return str(json.loads(endpoints.read_text(encoding="utf-8")).get("tracking_uri", ""))
        except (OSError, ValueError):
            return ""
    return ""


def _spec(args: argparse.Namespace) -> ServingSpec:
    extra: tuple[str, ...] = ()
    if args.args:
        try:
            parsed = json.loads(args.args)
        except ValueError as exc:
            raise ConfigError(f"--args must be a JSON list of strings: {exc}") from None
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise ConfigError(f"--args must be a JSON list of strings, got {args.args!r}")
        extra = tuple(parsed)
    # Round-trip through the tags so that the CLI and the pipeline validate identically.
    tags = ServingSpec(
        storage_uri=args.storage_uri,
        runtime=args.runtime,
        gpu_pool=args.gpu_pool,
        max_model_len=args.max_model_len,
        min_replicas=args.min_replicas,
        max_replicas=args.max_replicas,
    ).tags()
    if extra:
        tags[SERVING_ARGS] = json.dumps(list(extra))
    return ServingSpec.from_tags(tags)


def register(args: argparse.Namespace) -> int:
    """Validate, then register; a ``ConfigError`` (refusal) is raised before any write."""
    spec = _spec(args)
    pools = load_pools(default_pools_file())
    if not spec.storage_uri.startswith("runs:/"):  # resolved by the registry, then validated
        validate(args.name, spec, pools)  # before connecting: nothing is written if invalid
    registry = Registry.connect(tracking_uri(args.tracking_uri, args.state_dir))
    info = registry.register(
        args.name, spec, pools, fallback=args.fallback, model_aliases=tuple(args.model_alias)
    )
    print(f"registered {info.name} version {info.version} ({spec.storage_uri})")
    for key, value in sorted(info.tags.items()):
        print(f"  {key} = {value}")
    return 0


def evaluation_set(args: argparse.Namespace) -> int:
    """Validate the file, keep it in MLflow beside the model, set the gate's threshold tags."""
    from nexus.release.evaluation import EvaluationSet
    from nexus.release.gate import GateThresholds

    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc.strerror}") from None
    evaluation = EvaluationSet.loads(text)
    thresholds = {
        key: str(value)
        for key, value in (
            (QUALITY_MAX_LOGPROB_DROP, args.max_logprob_drop),
            (QUALITY_MAX_CHECK_DROP, args.max_check_drop),
            (QUALITY_MIN_EXAMPLES, args.min_examples),
            (QUALITY_JUDGE, args.judge),
            (QUALITY_JUDGE_MIN_EXAMPLES, args.judge_min_examples),
            (QUALITY_JUDGE_ALPHA, args.judge_alpha),
        )
        if value is not None
    }
    GateThresholds.from_tags(thresholds)  # refuse a bad value before any write
    registry = Registry.connect(tracking_uri(args.tracking_uri, args.state_dir))
    uri = registry.attach_evaluation_set(args.name, text)
    registry.set_model_tags(args.name, thresholds)
    print(f"attached {len(evaluation.examples)} examples to {args.name}: {uri}")
    for key, value in sorted(thresholds.items()):
        print(f"  {key} = {value}")
    return 0
