"""Step 7, record: the registry says what a release did (tags) and what serves (aliases).

``champion`` is the version serving 100 %, ``challenger`` the one in canary; a version's
``release.*`` tags hold its last release's status, Git commit, pipeline run, the analysis'
decision and reasons in one line, and the URL of the release's MLflow run (its numbers).
Every write is idempotent, because KFP may retry any step.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Final

from nexus.errors import RegistryError, ReleaseError
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release.plan import ReleasePlan

# MLflow limits tag values (5000 characters in its SQL store); keep room for JSON.
_MAX_TAG = 4000
_FINAL: Final = frozenset({"promoted", "rolled_back", "blocked"})
# The registry UI shows a tag as one chip cut at about 40 characters: a line, not a document.
_READABLE: Final = 300


def readable(analysis_json: str) -> str:
    """``release.analysis``: the decision and its reasons in one line ("rollback: canary 5xx
    ratio 0.200 exceeds ..."); the numbers are the release run's (``release.evidence``)."""
    try:
        body = json.loads(analysis_json)
        line = f"{body['decision']}: {'; '.join(body.get('reasons', []))}"
    except (ValueError, KeyError, TypeError):
        line = analysis_json
    return line[:_READABLE]


def _tags(registry: Registry, plan: ReleasePlan, tags: dict[str, str]) -> None:
    try:
        registry.set_tags(plan.model, plan.version, {k: v[:_MAX_TAG] for k, v in tags.items()})
    except RegistryError as exc:
        raise ReleaseError(f"cannot record the release in MLflow: {exc}") from exc


def mark_rollout(registry: Registry, plan: ReleasePlan, *, commit: str, run: str) -> None:
    """After the first push: a canary becomes ``challenger``; the commit and run are kept."""
    tags = {c.RELEASE_GIT_COMMIT: commit, c.RELEASE_RUN: run, c.RELEASE_ERROR: ""}
    if not plan.first_release:
        tags[c.RELEASE_STATUS] = "canary"
        tags[c.RELEASE_PLAN] = plan.to_json()
        registry.set_alias(plan.model, c.CHALLENGER, plan.version)
    _tags(registry, plan, tags)


def mark_promoted(
    registry: Registry, plan: ReleasePlan, *, commit: str, run: str, analysis: str
) -> None:
    """The version serves 100 %: it becomes ``champion`` and nothing is in canary."""
    try:
        registry.set_alias(plan.model, c.CHAMPION, plan.version)
        registry.delete_alias(plan.model, c.CHALLENGER)
    except RegistryError as exc:
        raise ReleaseError(f"cannot move the aliases of {plan.model}: {exc}") from exc
    _tags(
        registry,
        plan,
        {
            c.RELEASE_STATUS: "promoted",
            c.RELEASE_GIT_COMMIT: commit,
            c.RELEASE_RUN: run,
            c.RELEASE_ANALYSIS: readable(analysis),
            c.RELEASE_ERROR: "",
        },
    )


def decision(analysis_json: str) -> str:
    """The decision of an analysis (``""`` when unreadable)."""
    try:
        return str(json.loads(analysis_json).get("decision", ""))
    except (ValueError, AttributeError):
        return ""


def mark_rolled_back(
    registry: Registry, plan: ReleasePlan, *, commit: str, run: str, analysis: str,
    status: c.ReleaseStatus = "rolled_back",
) -> None:  # fmt: skip
    """Traffic is back on the champion (``blocked``: it never left it); the version stops
    being ``challenger``."""
    drop_challenger(registry, plan)
    _tags(
        registry,
        plan,
        {
            c.RELEASE_STATUS: status,
            c.RELEASE_GIT_COMMIT: commit,
            c.RELEASE_RUN: run,
            c.RELEASE_ANALYSIS: readable(analysis),
            c.RELEASE_ERROR: "",
        },
    )


def live_canary(registry: Registry, model: str, version: str, run: str) -> ReleasePlan | None:
    """The plan of the canary ``run`` put in Git and neither promoted nor rolled back."""
    try:
        tags = registry.version(model, version).tags
    except RegistryError:
        return None
    if tags.get(c.RELEASE_STATUS) != "canary" or tags.get(c.RELEASE_RUN) != run:
        return None
    try:
        return ReleasePlan.from_json(tags[c.RELEASE_PLAN])
    except (KeyError, ValueError, TypeError):  # no plan, or one cut at the tag limit
        return None


def drop_challenger(registry: Registry, plan: ReleasePlan) -> None:
    """``plan``'s version no longer takes traffic: it stops being ``challenger``."""
    try:
        if registry.alias(plan.model, c.CHALLENGER) == plan.version:
            registry.delete_alias(plan.model, c.CHALLENGER)
    except RegistryError as exc:
        raise ReleaseError(f"cannot move the aliases of {plan.model}: {exc}") from exc


@contextlib.contextmanager
def step_errors(
    tracking_uri: str, run: str, step: str, *, plan: str = "", model: str = "", version: str = ""
) -> Iterator[None]:
    """A failing step's own error in ``release.error``, tagged with this run.

    KFP tells an exit handler only that a task failed ("Task exit-handler-1 failed."), so
    each step writes why before failing, and ``record_outcome_step`` keeps that reason.
    Best effort: when the registry is what failed, the step's error still propagates.
    """
    try:
        yield
    except Exception as exc:
        try:
            if plan:
                parsed = ReleasePlan.from_json(plan)
                model, version = parsed.model, parsed.version
            reason = f"{step}: {type(exc).__name__}: {exc}"[:_MAX_TAG]
            tags = {c.RELEASE_ERROR: reason, c.RELEASE_RUN: run}
            Registry.connect(tracking_uri).set_tags(model, version, tags)
        except (RegistryError, ValueError, TypeError) as unrecorded:
            print(f"nexus-release: the error of {step} was not recorded: {unrecorded}")
        raise


def record_outcome_step(
    *, tracking_uri: str, model: str, version: str, run: str, state: str, error: str, note: str = ""
) -> str:
    """The registry's part of the exit handler: a run that did not succeed leaves ``failed``.

    The reason is the failed step's own error when it recorded one for this run (see
    ``step_errors``), else ``error``; ``note`` says what the handler did about it. A
    version already ``promoted`` or ``rolled_back`` by this run keeps that status (the
    traffic really is where the status says) even if a later step failed.
    """
    registry = Registry.connect(tracking_uri)
    try:
        tags = registry.version(model, version).tags
    except RegistryError as exc:
        # Resolve may have failed precisely because the version does not exist.
        print(f"nexus-release: outcome not recorded: {exc}")
        return "failed"
    current = tags.get(c.RELEASE_STATUS, "")
    if current in _FINAL and tags.get(c.RELEASE_RUN) == run:
        print(f"nexus-release: {model} version {version} {current} (run {state})")
        return current
    recorded = tags.get(c.RELEASE_ERROR, "") if tags.get(c.RELEASE_RUN) == run else ""
    reason = recorded or error or f"pipeline run ended {state} before promote or rollback"
    if note:
        reason = f"{reason}; {note}"
    try:
        registry.set_tags(
            model,
            version,
            {c.RELEASE_STATUS: "failed", c.RELEASE_RUN: run, c.RELEASE_ERROR: reason[:_MAX_TAG]},
        )
    except RegistryError as exc:
        raise ReleaseError(f"cannot record the outcome in MLflow: {exc}") from exc
    print(f"nexus-release: {model} version {version} failed: {reason}")
    return "failed"
