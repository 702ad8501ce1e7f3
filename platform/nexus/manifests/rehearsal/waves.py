"""Waves: Argo CD's sync played in order; the first wave that would never turn Healthy.

gitops-engine applies one (phase, wave) at a time and, in a sync with several waves,
waits until every resource of the running wave is Healthy before the next; a Degraded
resource fails the operation and Argo CD retries the same wave (argo-cd v3.5.0
``gitops-engine/pkg/sync/sync_context.go`` ``Sync``: running tasks are re-checked with
``health.GetResourceHealth``, ``HealthStatusDegraded`` sets ``OperationFailed``, and
``multiStep`` running tasks make it return and wait). The root Application does the same
over its child Applications, whose health the project's Lua check
(``argocd/argocd-cm.application-health.yaml``) takes from each child's own status.

Only kinds with a health assessment can hold a wave (a kind without one counts as
Healthy once applied): gitops-engine's built-in checks (``pkg/health/health.go``
``GetHealthCheckFunc``: Deployment, StatefulSet, ReplicaSet, DaemonSet, Pod, Job,
Service, PersistentVolumeClaim, Ingress, HPA, APIService) and the Lua checks shipped in
argo-cd's ``resource_customizations`` for the kinds the tree uses
(``serving.kserve.io/InferenceService``, ``serving.knative.dev/Service``,
``external-secrets.io/ExternalSecret``). An InferenceGraph has none: a broken router does
not stop the sync (the reachability and references findings still report it). An object
whose namespace does not exist fails to apply, which also stops its wave.

The root waits for its child Applications only with a health check for Applications in
``argocd-cm`` (``resource.customizations.health.argoproj.io_Application``): Argo CD
stopped assessing Applications' health in 1.8 (argo-cd v3.5.0
``docs/operator-manual/health.md``, "Argo CD App"); without it every child wave is
applied at once and the order of the Applications' waves means nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from nexus.manifests.findings import Finding
from nexus.manifests.rehearsal.tree import (
    AFTER_SYNC,
    ROOT_APPLICATION,
    Obj,
    Problem,
    Step,
    Tree,
)

RULE: Final = "rehearsal-waves"
APPLICATION_HEALTH: Final = "resource.customizations.health.argoproj.io_Application"
HEALTH_CHECKED: Final = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "ReplicaSet"),
        ("apps", "DaemonSet"),
        ("", "Pod"),
        ("", "Service"),
        ("", "PersistentVolumeClaim"),
        ("batch", "Job"),
        ("networking.k8s.io", "Ingress"),
        ("serving.kserve.io", "InferenceService"),
        ("serving.knative.dev", "Service"),
        ("external-secrets.io", "ExternalSecret"),
    }
)


def holds_wave(obj: Obj, reason: str) -> bool:
    if obj.step == AFTER_SYNC or obj.step.label.startswith("component "):
        return False
    return (obj.group, obj.kind) in HEALTH_CHECKED or reason.startswith("namespace ")


def _blocked(tree: Tree, first: Step) -> str:
    later: dict[str, list[str]] = {}
    for obj in tree.objects:
        if obj.step > first and obj.step != AFTER_SYNC:
            app_wave, wave = obj.step.order
            key = f"Application {obj.app} (wave {app_wave})"
            later.setdefault(key, [])
            if str(wave) not in later[key]:
                later[key].append(str(wave))
    if not later:
        return "nothing after it (it is the last wave), but the sync never completes"
    return "; ".join(f"{app} resource wave(s) {', '.join(w)}" for app, w in later.items())


def _application_health(tree: Tree) -> list[Finding]:
    """An error on the root when its children's waves cannot hold without the Lua check."""
    if len({app.wave for app in tree.apps}) < 2:
        return []
    if (tree.ctx.configmap_data("argocd-cm", "argocd") or {}).get(APPLICATION_HEALTH):
        return []
    root = next(d for d in tree.ctx.of_kind("Application") if d.display == ROOT_APPLICATION)
    return [
        root.finding(
            "",
            RULE,
            "no argocd-cm in the tree gives Applications a health check, so the root applies "
            "every child Application's wave at once (Argo CD assesses no Application health "
            "since 1.8)",
            f"ship an argocd-cm patch with {APPLICATION_HEALTH} (argo-cd "
            "docs/operator-manual/health.md) under argocd/",
        )
    ]


def check(tree: Tree, problems: Sequence[Problem]) -> list[Finding]:
    findings = _application_health(tree)
    stalled: dict[int, tuple[Obj, list[str]]] = {}
    for problem in problems:
        for obj in problem.stalls:
            if holds_wave(obj, problem.reason):
                entry = stalled.setdefault(id(obj), (obj, []))
                if problem.reason not in entry[1]:
                    entry[1].append(problem.reason)
    if not stalled:
        return findings
    first = min(obj.step for obj, _ in stalled.values())
    blocked = _blocked(tree, first)
    for obj, reasons in stalled.values():
        if obj.step != first:
            continue
        findings.append(
            obj.finding(
                RULE,
                f"Argo CD's sync stops at {first.label}: {obj.ref} would never be Healthy "
                f"({'; '.join(reasons)}). It blocks {blocked}",
                "fix the references/scheduling errors of this object; every later wave "
                "waits for it",
            )
        )
    return findings
