"""Step 2, render: the InferenceService of the plan, with or without a canary split.

A first release (no champion yet) goes straight to 100 %: there is no stable revision
to compare with, so a canary would only delay it. Otherwise the new version gets
``canaryTrafficPercent``; promote renders the same version without the field, and
rollback renders it with ``canaryTrafficPercent: 0`` so Knative sends everything back to
the previous rolled-out revision (KServe's documented rollback) without creating a third
revision.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nexus.errors import ConfigError, ReleaseError
from nexus.manifests.pools import Pool, load_pools
from nexus.release.plan import ReleasePlan
from nexus.release.resolve import default_pools_file
from nexus.release.tag_routing import ANNOTATION


def manifest_path(environment: str, model: str) -> str:
    """Where the InferenceService lives in the GitOps repository (Argo CD syncs it)."""
    return f"inference_services/{environment}/inferenceservice.{model}.yaml"


def render_manifest(
    plan: ReleasePlan,
    *,
    canary_percent: int | None,
    pools: Mapping[str, Pool],
    tag_routing: bool = False,
) -> str:
    """Deterministic YAML of the plan's InferenceService (import of ``kserve`` is deferred).

    ``tag_routing`` adds ``serving.kserve.io/enable-tag-routing: "true"``, with which KServe
    tags the candidate ``latest`` so the quality gate reaches it at 0 % (``tag_routing``).
    """
    from nexus.manifests.kserve_codec import dump_yaml, to_dict
    from nexus.manifests.render import HEADER, render_inference_service

    try:
        description = plan.description(canary_percent=canary_percent)
        doc = to_dict(render_inference_service(description, pools))
        if tag_routing:
            doc.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION] = "true"
        return dump_yaml([doc], header=HEADER)
    except ConfigError as exc:
        raise ReleaseError(f"cannot render {plan.model} version {plan.version}: {exc}") from exc


def load_step_pools(pools_file: str) -> dict[str, Pool]:
    try:
        return load_pools(Path(pools_file) if pools_file else default_pools_file())
    except ConfigError as exc:
        raise ReleaseError(str(exc)) from exc
