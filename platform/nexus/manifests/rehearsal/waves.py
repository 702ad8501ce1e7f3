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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from nexus.manifests.findings import Finding
from nexus.manifests.rehearsal.tree import AFTER_SYNC, Obj, Problem, Step, Tree

RULE: Final = "rehearsal-waves"
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


def check(tree: Tree, problems: Sequence[Problem]) -> list[Finding]:
    stalled: dict[int, tuple[Obj, list[str]]] = {}
    for problem in problems:
        for obj in problem.stalls:
            if holds_wave(obj, problem.reason):
                entry = stalled.setdefault(id(obj), (obj, []))
                if problem.reason not in entry[1]:
                    entry[1].append(problem.reason)
    if not stalled:
        return []
    first = min(obj.step for obj, _ in stalled.values())
    blocked = _blocked(tree, first)
    findings = []
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
