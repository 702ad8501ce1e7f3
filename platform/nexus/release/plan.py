"""The release plan: what ``resolve`` found out, passed as JSON from step to step.

KFP passes parameters between components as strings; one JSON document that every step
reads keeps the components' signatures short and the facts consistent (the champion
seen at resolve time is the one promote and rollback act against).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from nexus.manifests.model import ModelDescription, Runtime

# The Argo CD Application that syncs inference_services/ (argocd/ in this repository).
ISVC_APPLICATION: Final = "nexus-inference-services"


@dataclass(frozen=True, slots=True)
class ReleasePlan:
    """One model version bound for one environment."""

    model: str
    version: str
    environment: str
    storage_uri: str
    runtime: Runtime
    pool: str
    namespace: str = "nexus"
    min_replicas: int = 1
    max_replicas: int = 1
    vllm_args: tuple[str, ...] = ()
    predictor_image: str | None = None
    # The version serving 100 % when the release started (``None``: first release).
    champion: str | None = None
    model_aliases: tuple[str, ...] = field(default=())
    # The traffic percents of the canary, the last one 100 (``conventions.canary_steps``).
    canary_steps: tuple[int, ...] = (10, 100)
    # The model has an evaluation set: the quality gate runs at 0 % before any traffic.
    quality_gate: bool = False

    @property
    def first_release(self) -> bool:
        """No champion serves yet, or the champion is this very version (a re-release)."""
        return self.champion is None or self.champion == self.version

    def description(self, *, canary_percent: int | None) -> ModelDescription:
        return ModelDescription(
            name=self.model,
            storage_uri=self.storage_uri,
            runtime=self.runtime,
            pool=self.pool,
            environment=self.environment,
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            vllm_args=self.vllm_args,
            canary_percent=canary_percent,
            namespace=self.namespace,
            predictor_image=self.predictor_image,
            model_aliases=self.model_aliases,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReleasePlan:
        raw: dict[str, Any] = json.loads(text)
        raw["vllm_args"] = tuple(raw.get("vllm_args") or ())
        raw["model_aliases"] = tuple(raw.get("model_aliases") or ())
        raw["canary_steps"] = tuple(raw.get("canary_steps") or (10, 100))
        return cls(**raw)
