"""The quality gate as the canary's first stage, at 0 %: the candidate judged dark.

``canary.stages`` puts this stage in front of the traffic steps when the plan says the
model has an evaluation set (``ReleasePlan.quality_gate``, set by ``resolve``). The stage
commits ``canaryTrafficPercent: 0`` with tag routing on (``render``, the
``tag_routing.ANNOTATION``), waits until the candidate is the latest *ready* revision,
then calls ``gate.judge_candidate`` with the candidate at the ``latest`` tag and the
champion at ``prev``:
- in a cluster (``status_url`` the Kubernetes API) at the predictor's tag host,
  ``http://latest-<isvc>-predictor.<ns>.svc.cluster.local`` (``tag_routing``);
- on the local platform at the front's URL (the InferenceService's ``status.url``) with
  that host as the ``Host`` header, which the local front routes alike (``local.front``).

A judge named by ``quality.judge`` (``nexus.release.judge``) is an OpenAI base URL taken as
it is (the model it serves read from its ``/models``), or an InferenceService of the
release's namespace reached alike at its predictor's own host,
``http://<name>-predictor.<ns>.svc.cluster.local`` with its runtime's path prefix, or on the
local platform at its front with that Host (the front routes it to a predictor by weight).

A failed verdict is the decision ``blocked``: the canary ends there, the rollback step
keeps the candidate at 0 % and records ``blocked`` (``rollout.end_step``), and no
commit above 0 % is ever made. The verdict rides in the step's analysis (``gate``) so the
evidence step writes its report section and MLflow table (``tracking.evidence_step``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from nexus.errors import ConfigError, RegistryError, ReleaseError
from nexus.manifests.model import PREDICTOR_PATH_PREFIX, runtime_of
from nexus.registry.client import Registry
from nexus.release import tag_routing
from nexus.release.analyze import Analysis
from nexus.release.evaluation import Endpoint, EvaluationSet
from nexus.release.gate import (
    GATE_KEY,
    JUDGE_SCHEMES,
    GateThresholds,
    GateVerdict,
    judge_candidate,
    measured,
)
from nexus.release.judge import served_model
from nexus.release.plan import ReleasePlan
from nexus.release.wait import KUBERNETES_API, status_source

READY_POLL_S: Final = 1.0


def verdict_json(verdict: GateVerdict) -> dict[str, Any]:
    return {
        "passed": verdict.passed,
        "reasons": list(verdict.reasons),
        "metrics": dict(verdict.metrics),
        "rows": [dict(row) for row in verdict.rows],
        # The table's column order (the analysis' JSON sorts keys).
        "columns": list(verdict.rows[0]) if verdict.rows else [],
    }


def verdict_from(analysis: Mapping[str, Any]) -> GateVerdict | None:
    """The gate's verdict in a canary summary (any of its steps), or ``None``."""
    for step in [analysis, *(analysis.get("steps") or [])]:
        raw = step.get(GATE_KEY)
        if raw:
            return GateVerdict(
                bool(raw["passed"]),
                tuple(raw["reasons"]),
                dict(raw["metrics"]),
                tuple({col: row.get(col) for col in raw["columns"]} for row in raw["rows"]),
            )
    return None


def _candidate_ready(status_url: str, plan: ReleasePlan, revision: str, timeout_s: float) -> str:
    """Wait until ``revision`` is the predictor's latest ready revision; the ISVC's URL."""
    source = status_source(status_url, plan.namespace, plan.model)
    deadline = time.monotonic() + timeout_s
    seen: Any = None
    while True:
        try:
            isvc = source.inference_service() or {}
        except (OSError, ValueError) as exc:  # refused, reset, timeouts: as the waits do
            isvc, seen = {}, f"status API unavailable: {exc}"
        status = isvc.get("status") or {}
        if status:
            predictor = (status.get("components") or {}).get("predictor") or {}
            seen = predictor.get("latestReadyRevision")
        if seen == revision:
            return str(status.get("url") or "")
        if time.monotonic() >= deadline:
            raise ReleaseError(
                f"the candidate {revision} is not the latest ready revision after "
                f"{timeout_s:.0f} s (latestReadyRevision {seen!r})"
            )
        time.sleep(READY_POLL_S)


def _in_cluster(status_url: str) -> bool:
    return not status_url or status_url.rstrip("/") == KUBERNETES_API


def endpoints(
    status_url: str, plan: ReleasePlan, front_url: str
) -> tuple[Endpoint, Endpoint | None]:
    """The candidate (``latest``) and the champion (``prev``; none on a first release)."""
    prefix = plan.description(canary_percent=0).path_prefix
    cluster = _in_cluster(status_url)

    def at(tag: tag_routing.Tag) -> Endpoint:
        host = tag_routing.predictor_host(plan.model, plan.namespace, tag)
        if cluster:
            return Endpoint(f"http://{host}{prefix}/v1", plan.model)
        if not front_url:
            raise ReleaseError(f"the InferenceService {plan.model} has no status.url to reach")
        return Endpoint(f"{front_url.rstrip('/')}{prefix}/v1", plan.model, host=host)

    return at("latest"), (None if plan.first_release else at("prev"))


def judge_endpoint(status_url: str, plan: ReleasePlan, judge: str) -> Endpoint | None:
    """Where the judge of ``quality.judge`` answers (``None`` without one); see the docstring."""
    if not judge:
        return None
    if judge.startswith(JUDGE_SCHEMES):
        return Endpoint(judge, served_model(judge))
    try:
        isvc = status_source(status_url, plan.namespace, judge).inference_service()
    except (OSError, ValueError) as exc:
        raise ReleaseError(f"the judge InferenceService {judge} cannot be read: {exc}") from exc
    if isvc is None:
        raise ReleaseError(
            f"the judge {judge} (quality.judge) is no InferenceService of {plan.namespace}"
        )
    host = tag_routing.service_host(judge, plan.namespace)
    prefix = PREDICTOR_PATH_PREFIX[runtime_of(isvc)]
    if _in_cluster(status_url):
        return Endpoint(f"http://{host}{prefix}/v1", judge)
    front = str((isvc.get("status") or {}).get("url") or "")
    if not front:
        raise ReleaseError(f"the judge InferenceService {judge} has no status.url to reach")
    return Endpoint(f"{front.rstrip('/')}{prefix}/v1", judge, host=host)


def gate_inputs(tracking_uri: str, model: str) -> tuple[EvaluationSet, GateThresholds]:
    """The model's evaluation set and ``quality.*`` thresholds; ``ReleaseError`` when bad
    (the resolve step calls it too, so a bad set fails before any commit)."""
    registry = Registry.connect(tracking_uri)
    try:
        text = registry.evaluation_set(model)
        if text is None:
            raise ReleaseError(f"{model} has no evaluation set for the quality gate")
        return EvaluationSet.loads(text), GateThresholds.from_tags(registry.model_tags(model))
    except (ConfigError, RegistryError) as exc:
        raise ReleaseError(f"the quality gate of {model} cannot read its inputs: {exc}") from exc


def quality_gate(tracking_uri: str, status_url: str, timeout_s: float) -> GateJudge:
    """The gate stage's judge for ``canary.run_canary``."""

    def judge(plan: ReleasePlan, revision: str) -> Analysis:
        started = time.time()
        evaluation, thresholds = gate_inputs(tracking_uri, plan.model)
        front = _candidate_ready(status_url, plan, revision, timeout_s)
        candidate, champion = endpoints(status_url, plan, front)
        verdict = judge_candidate(
            candidate=candidate,
            champion=champion,
            evaluation=evaluation,
            thresholds=thresholds,
            judge=None if champion is None else judge_endpoint(status_url, plan, thresholds.judge),
        )
        return stage_analysis(verdict, revision, started=started, now=time.time())

    return judge


def stage_analysis(verdict: GateVerdict, revision: str, *, started: float, now: float) -> Analysis:
    """The gate stage's judgement of ``revision``: ``blocked`` unless the verdict passed; the
    verdict rides along for the evidence (``verdict_from``)."""
    return Analysis(
        "promote" if verdict.passed else "blocked",
        (f"quality gate passed: {measured(verdict)}",)
        if verdict.passed
        else tuple(f"quality gate: {reason}" for reason in verdict.reasons),
        now - started,
        extra={"window_end": now, GATE_KEY: verdict_json(verdict), "revision": revision},
    )


GateJudge = Callable[[ReleasePlan, str], Analysis]
