"""The rollouts of a release: promote or roll back, and the exit handler's revert.

Each is render → commit → wait → record (the canary's own steps are
``nexus.release.canary``). Promote renders the new version without
``canaryTrafficPercent`` (Knative sends it 100 %); rollback renders it with
``canaryTrafficPercent: 0`` (everything back on the previous rolled-out revision, the
champion). Either way Git holds the truth and the
registry is only updated once the cluster shows the traffic where Git says it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from nexus.errors import NexusError
from nexus.registry.client import Registry
from nexus.registry.conventions import ReleaseStatus
from nexus.release import record, tracking
from nexus.release.gate import OUTCOME_BLOCKED
from nexus.release.gitops import commit_step
from nexus.release.plan import ReleasePlan
from nexus.release.render import load_step_pools, render_manifest
from nexus.release.wait import Expect, wait_step


def commit_traffic(
    *,
    plan: ReleasePlan,
    canary_percent: int | None,
    action: str,
    gitops_repo: str,
    run: str,
    pools_file: str = "",
    detail: str = "",
    tag_routing: bool = False,
) -> str:
    """Commit the plan's InferenceService with ``canaryTrafficPercent`` (``None``: 100 %)."""
    manifest = render_manifest(
        plan,
        canary_percent=canary_percent,
        pools=load_step_pools(pools_file),
        tag_routing=tag_routing,
    )
    return commit_step(
        repo_url=gitops_repo,
        environment=plan.environment,
        model=plan.model,
        version=plan.version,
        run=run,
        manifest=manifest,
        action=action,
        detail=detail,
    )


Ending = Literal["promote", "rollback"]


@dataclass(frozen=True, slots=True)
class _Traffic:
    """What an ending commits and waits for."""

    canary_percent: int | None  # ``None``: no ``canaryTrafficPercent``, Knative sends 100 %
    expect: Expect
    action: str  # the commit subject's verb (``gitops.commit_step``)


_TRAFFIC: Final[dict[Ending, _Traffic]] = {
    "promote": _Traffic(None, "full", "Promote"),
    "rollback": _Traffic(0, "rollback", "Roll back"),
}


def end_step(
    ending: Ending,
    *,
    tracking_uri: str,
    gitops_repo: str,
    status_url: str,
    plan_json: str,
    analysis_json: str,
    run: str,
    timeout_s: float,
    pools_file: str = "",
) -> str:
    """The KFP component's body of the canary's end; the outcome.

    ``promote``: 100 % on the new version, which becomes ``champion`` (``promoted``).
    ``rollback``: the canary gets 0 %, the champion serves everything; ``blocked`` when the
    quality gate refused the candidate, else ``rolled_back``.
    """
    plan = ReleasePlan.from_json(plan_json)
    traffic = _TRAFFIC[ending]
    commit = commit_traffic(
        plan=plan,
        canary_percent=traffic.canary_percent,
        action=traffic.action,
        gitops_repo=gitops_repo,
        run=run,
        pools_file=pools_file,
    )
    wait_step(
        status_url=status_url,
        namespace=plan.namespace,
        model=plan.model,
        commit=commit,
        expect=traffic.expect,
        canary_percent=0,
        timeout_s=timeout_s,
        gitops_repo=gitops_repo,
    )
    registry = Registry.connect(tracking_uri)
    status: ReleaseStatus
    if ending == "promote":
        status, said = "promoted", "promoted"
        record.mark_promoted(registry, plan, commit=commit, run=run, analysis=analysis_json)
    else:
        # The quality gate refused it at 0 %: it never had traffic, the outcome is ``blocked``.
        blocked = record.decision(analysis_json) == "blocked"
        status = OUTCOME_BLOCKED if blocked else "rolled_back"
        said = "blocked by the quality gate" if blocked else "rolled back"
        record.mark_rolled_back(
            registry, plan, commit=commit, run=run, analysis=analysis_json, status=status
        )
    print(f"nexus-release: {plan.model} version {plan.version} {said} ({commit[:12]})")
    return status


def outcome_step(
    *,
    tracking_uri: str,
    gitops_repo: str,
    model: str,
    version: str,
    run: str,
    state: str,
    error: str,
    pools_file: str = "",
) -> str:
    """The exit handler's body: a failed run takes its canary out of traffic, then says so.

    A run that fails between its canary commit and the decision (Prometheus unreachable, a
    wait that timed out, a crashed step) would leave the split in Git, and Argo CD would
    keep sending the canary its share. If this run's canary is still in Git, the handler
    commits ``canaryTrafficPercent: 0`` as a rollback does, without waiting for the
    cluster (the run has failed already; Argo CD applies the commit). Then the registry
    records ``failed`` with why, and what became of the canary.
    """
    registry = Registry.connect(tracking_uri)
    plan = None if state == "SUCCEEDED" else record.live_canary(registry, model, version, run)
    note = ""
    if plan is not None:
        try:
            sha = commit_traffic(
                plan=plan,
                canary_percent=0,
                action="Revert the canary of",
                gitops_repo=gitops_repo,
                run=run,
                pools_file=pools_file,
            )
            record.drop_challenger(registry, plan)
        except NexusError as exc:
            note = f"taking the canary out of traffic failed too: {exc}"
        else:
            note = f"the canary was taken out of traffic in {sha[:12]}"
            print(f"nexus-release: {model} version {version}: canary reverted ({sha[:12]})")
    status = record.record_outcome_step(
        tracking_uri=tracking_uri,
        model=model,
        version=version,
        run=run,
        state=state,
        error=error,
        note=note,
    )
    tracking.record_outcome(tracking_uri, model, run, status)
    return status
