"""Knative's revision and traffic rules for one InferenceService, as pure functions.

KServe in Serverless mode turns every change of ``spec.predictor`` (except
``canaryTrafficPercent``) into a new Knative revision ``<isvc>-predictor-<n:05d>``.
``canaryTrafficPercent: P`` sends P % to the latest revision and the rest to the
previous rolled-out one (tags ``latest`` / ``prev``); removing the field promotes the
latest to 100 %; ``0`` rolls back (the previous one gets 100 %). Knative moves a route
only once every revision it names is ready, so a starting canary takes no traffic, and
``latestRolledoutRevision`` moves when the latest revision serves 100 %.

The controller feeds these functions the Git spec and readiness; nothing here touches
processes, clocks or files, which is what lets the tests state the rules directly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

CANARY_FIELD = "canaryTrafficPercent"
Tag = Literal["latest", "prev"]


@dataclass(frozen=True, slots=True)
class Revision:
    name: str
    number: int
    digest: str
    spec: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class TrafficTarget:
    revision: str
    percent: int
    latest: bool
    tag: Tag


@dataclass(frozen=True, slots=True)
class RevisionState:
    """One InferenceService's revisions and the traffic routing applies right now."""

    revisions: tuple[Revision, ...] = ()
    traffic: tuple[TrafficTarget, ...] = ()
    latest_rolled_out: str | None = None
    previous_rolled_out: str | None = None
    latest_ready: str | None = None

    @property
    def latest(self) -> Revision | None:
        return self.revisions[-1] if self.revisions else None

    def revision(self, name: str) -> Revision | None:
        return next((r for r in self.revisions if r.name == name), None)


def revision_name(isvc: str, number: int) -> str:
    return f"{isvc}-predictor-{number:05d}"


def predictor_template(predictor: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``spec.predictor`` whose change makes a new revision."""
    return {k: v for k, v in predictor.items() if k != CANARY_FIELD}


def digest(predictor: Mapping[str, Any]) -> str:
    canonical = json.dumps(predictor_template(predictor), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def canary_percent(predictor: Mapping[str, Any]) -> int | None:
    value = predictor.get(CANARY_FIELD)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"{CANARY_FIELD} must be an integer within 0..100, got {value!r}")
    return value


def observe(state: RevisionState, isvc: str, predictor: Mapping[str, Any]) -> RevisionState:
    """Create a revision when the predictor template differs from the latest one's."""
    wanted = digest(predictor)
    latest = state.latest
    if latest is not None and latest.digest == wanted:
        return state
    number = latest.number + 1 if latest else 1
    created = Revision(revision_name(isvc, number), number, wanted, predictor_template(predictor))
    return replace(state, revisions=(*state.revisions, created))


def desired_traffic(state: RevisionState, canary: int | None) -> tuple[TrafficTarget, ...]:
    """Where traffic should go for this spec (Knative's route before readiness)."""
    latest = state.latest
    if latest is None:
        return ()
    stable = state.latest_rolled_out
    if stable is None or stable == latest.name or canary is None or canary == 100:
        return (TrafficTarget(latest.name, 100, latest=True, tag="latest"),)
    return (
        TrafficTarget(latest.name, canary, latest=True, tag="latest"),
        TrafficTarget(stable, 100 - canary, latest=False, tag="prev"),
    )


def route(
    state: RevisionState, desired: tuple[TrafficTarget, ...], ready: Callable[[str], bool]
) -> RevisionState:
    """Apply ``desired`` once every revision it sends traffic to is ready."""
    newest_ready = max(
        (r for r in state.revisions if ready(r.name)), key=lambda r: r.number, default=None
    )
    if newest_ready is not None:
        current = state.revision(state.latest_ready) if state.latest_ready else None
        if current is None or newest_ready.number > current.number:
            state = replace(state, latest_ready=newest_ready.name)
    if not all(ready(t.revision) for t in desired if t.percent > 0):
        return state
    state = replace(state, traffic=desired)
    full = next((t for t in desired if t.latest and t.percent == 100), None)
    if full is not None and full.revision != state.latest_rolled_out:
        state = replace(
            state, previous_rolled_out=state.latest_rolled_out, latest_rolled_out=full.revision
        )
    return state


def live(
    state: RevisionState, desired: tuple[TrafficTarget, ...], *, tag_routing: bool = False
) -> list[str]:
    """Revisions whose processes must run: serving now, or about to (oldest first).

    With tag routing the latest revision is reachable at its ``latest`` tag even at 0 %, so
    it runs too (Knative would scale it from zero on its first request).
    """
    names = {t.revision for t in (*desired, *state.traffic) if t.percent > 0}
    if tag_routing and state.latest is not None and desired:
        names.add(state.latest.name)
    return [r.name for r in state.revisions if r.name in names]


def converged(state: RevisionState, desired: tuple[TrafficTarget, ...]) -> bool:
    return state.traffic == desired


def to_json(state: RevisionState) -> dict[str, Any]:
    return {
        "revisions": [
            {"name": r.name, "number": r.number, "digest": r.digest, "spec": r.spec}
            for r in state.revisions
        ],
        "traffic": [
            {"revision": t.revision, "percent": t.percent, "latest": t.latest, "tag": t.tag}
            for t in state.traffic
        ],
        "latest_rolled_out": state.latest_rolled_out,
        "previous_rolled_out": state.previous_rolled_out,
        "latest_ready": state.latest_ready,
    }


def from_json(data: Mapping[str, Any]) -> RevisionState:
    return RevisionState(
        revisions=tuple(
            Revision(r["name"], int(r["number"]), r["digest"], r.get("spec", {}))
            for r in data.get("revisions", [])
        ),
        traffic=tuple(
            TrafficTarget(t["revision"], int(t["percent"]), bool(t["latest"]), t["tag"])
            for t in data.get("traffic", [])
        ),
        latest_rolled_out=data.get("latest_rolled_out"),
        previous_rolled_out=data.get("previous_rolled_out"),
        latest_ready=data.get("latest_ready"),
    )
