"""The canary, step by step: each step commits its traffic, waits for the split, judges.

A plan's ``canary_steps`` (``10, 25, 50, 100``; ``nexus.release.resolve.traffic_steps``)
are the shares the new version takes in turn. Each step below 100 commits its
``canaryTrafficPercent`` to Git, waits until the cluster splits the traffic so
(``wait.wait_rollout``), then judges its own window (``analyze.judge_window``): canary
against stable over the seconds the step ran, with the minimum request count of the
thresholds. A step with fewer requests than that is judged a rollback, the reason naming
the count: a share the canary did not get is never promoted. The first step that is not
judged ``promote`` ends the canary, and no later step is committed; the step of 100 is
the promotion (``rollout.end_step``) once every step before it passed.

While a window runs, the canary alert of the shipped PrometheusRule
(``CANARY_ALERT``, ``platform/k8s/monitoring/nexus.prometheusrule.yaml``) firing for the
canary's revision ends the step at once as a rollback: the step polls Prometheus'
``ALERTS`` series every ``ALERT_POLL_S``, well under one rule evaluation interval (30 s
for kube-prometheus-stack's Prometheus, 5 s for the local platform's,
``nexus.local.prometheus``); the window measured so far is judged for the record.

When the model has an evaluation set, the first stage is the quality gate at 0 %
(``nexus.release.gate_stage``): committed with tag routing, judged on likelihood and
checks against the champion; a ``blocked`` decision ends the canary before any commit
above 0 %.

A first release has nothing to compare with: one commit at 100 %, no step is judged (nor
gated: the gate compares with a champion).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any, Final

from nexus.errors import GitError, PushRace, ReleaseError
from nexus.registry.client import Registry
from nexus.release import record
from nexus.release.analyze import LABEL_VALUE, Analysis, Prometheus, Thresholds, judge_window
from nexus.release.gate_stage import quality_gate
from nexus.release.plan import ReleasePlan
from nexus.release.rollout import commit_traffic
from nexus.release.wait import Rollout, wait_step

# The alert that says a canary fails more than its stable revision (the shipped rule's
# name; tests/release/test_stepped.py checks the PrometheusRule defines it).
CANARY_ALERT: Final = "NexusCanaryErrorRatioAboveStable"
ALERT_POLL_S: Final = 1.0
# A Git outage while committing a step (a push race is retried inside gitops.publish).
COMMIT_ATTEMPTS: Final = 3
COMMIT_BACKOFF_S: Final = 5.0


@dataclasses.dataclass(frozen=True, slots=True)
class Window:
    """How each step is judged."""

    window_s: float
    thresholds: Thresholds
    wait_timeout_s: float
    poll_s: float = ALERT_POLL_S


def alert_query(isvc: str, revision: str) -> str:
    """PromQL of the canary alert firing for ``revision`` of ``isvc``."""
    for value in (isvc, revision):
        if not LABEL_VALUE.match(value):
            raise ReleaseError(f"{value!r} is not a valid InferenceService or revision name")
    return (
        f'ALERTS{{alertname="{CANARY_ALERT}", alertstate="firing", '
        f'isvc="{isvc}", revision="{revision}"}}'
    )


def watch(
    prometheus: Prometheus,
    isvc: str,
    revision: str,
    window: Window,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[float, str | None]:
    """Wait out the window unless the alert fires: ``(seconds waited, why it was cut)``."""
    expr = alert_query(isvc, revision)
    start = clock()
    while True:
        now = clock()
        if prometheus.query(expr, at=now):
            return now - start, (
                f"alert {CANARY_ALERT} fired for {revision} {now - start:.1f} s into the "
                f"{window.window_s:.0f} s window"
            )
        left = start + window.window_s - now
        if left <= 0:
            return window.window_s, None
        sleep(min(window.poll_s, left))


def judge_step(
    prometheus: Prometheus,
    plan: ReleasePlan,
    rollout: Rollout,
    window: Window,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Analysis:
    """One step's window, cut short by the canary alert, judged canary against stable."""
    waited, alert = watch(
        prometheus, plan.model, rollout.latest_revision, window, clock=clock, sleep=sleep
    )
    analysis = judge_window(
        prometheus,
        plan,
        rollout,
        window_s=max(1.0, waited),
        thresholds=window.thresholds,
        at=clock(),
    )
    if alert is None:
        return analysis
    others = analysis.reasons if analysis.decision == "rollback" else ()
    extra = {**analysis.extra, "alert": CANARY_ALERT, "aborted_after_s": round(waited, 3)}
    return dataclasses.replace(analysis, decision="rollback", reasons=(alert, *others), extra=extra)


Judge = Callable[[ReleasePlan, Rollout], Analysis]


def stages(
    plan: ReleasePlan, *, traffic: Judge, gate: Judge | None = None
) -> list[tuple[int, Judge]]:
    """The canary's stages in order: the share of traffic each commits, and its judge.

    A check before any traffic is one more stage in front, at 0 %: the quality gate
    (``nexus.release.gate_stage``) when the model has an evaluation set.
    """
    found = [(percent, traffic) for percent in plan.canary_steps[:-1]]
    if gate is not None and plan.quality_gate:
        return [(0, gate), *found]
    return found


def _commit(plan: ReleasePlan, percent: int | None, *, gitops_repo: str, run: str) -> str:
    action, detail = ("Release", "") if percent is None else ("Canary", f" at {percent} %")
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return commit_traffic(
                plan=plan,
                canary_percent=percent,
                # The gate reaches the candidate at 0 % by its tag (``tag_routing``).
                tag_routing=percent == 0,
                action=action,
                detail=detail,
                gitops_repo=gitops_repo,
                run=run,
            )
        except GitError as exc:
            if isinstance(exc, PushRace) or attempt == COMMIT_ATTEMPTS:
                raise
            print(f"nexus-release: commit failed ({exc}), again in {COMMIT_BACKOFF_S:.0f} s")
            time.sleep(COMMIT_BACKOFF_S)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def _rollout(
    plan: ReleasePlan, percent: int | None, *, status_url: str, gitops_repo: str, run: str,
    registry: Registry, timeout_s: float,
) -> Rollout:  # fmt: skip
    sha = _commit(plan, percent, gitops_repo=gitops_repo, run=run)
    record.mark_rollout(registry, plan, commit=sha, run=run)
    rolled = wait_step(
        status_url=status_url,
        namespace=plan.namespace,
        model=plan.model,
        commit=sha,
        expect="full" if percent is None else "canary",
        canary_percent=percent or 0,
        timeout_s=timeout_s,
        gitops_repo=gitops_repo,
    )
    return Rollout.from_json(rolled)


def summarize(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """The canary's judgement: the last step's, with every step's under ``steps``."""
    last = steps[-1]
    reasons = list(last["reasons"])
    if len(steps) > 1:
        if last["decision"] == "promote":
            shares = ", ".join(f"{s['percent']} %" for s in steps if s["percent"])
            reasons = [f"canary within every threshold at {shares}"]
            if steps[0]["percent"] == 0:
                reasons.insert(0, "quality gate at 0 % passed")
        else:
            reasons = [f"at {last['percent']} %: {reason}" for reason in reasons]
    start = steps[0]["window_end"] - steps[0]["window_s"]
    return {**last, "reasons": reasons, "steps": steps, "span_start": start}


def run_canary(
    *,
    plan: ReleasePlan,
    tracking_uri: str,
    gitops_repo: str,
    status_url: str,
    prometheus_url: str,
    window: Window,
    run: str,
) -> dict[str, Any]:
    """Every step until one fails or all passed; the analysis the promotion acts on."""
    registry = Registry.connect(tracking_uri)
    if plan.first_release:
        _rollout(plan, None, status_url=status_url, gitops_repo=gitops_repo, run=run,
                 registry=registry, timeout_s=window.wait_timeout_s)  # fmt: skip
        first = Analysis("promote", ("first release: no stable revision to compare",), 0.0)
        return dict(json.loads(first.to_json()))
    prometheus = Prometheus(prometheus_url)

    def traffic(plan: ReleasePlan, rollout: Rollout) -> Analysis:
        return judge_step(prometheus, plan, rollout, window)

    def gate(plan: ReleasePlan, rollout: Rollout) -> Analysis:
        judge = quality_gate(tracking_uri, status_url, window.wait_timeout_s)
        return judge(plan, rollout.latest_revision)

    steps: list[dict[str, Any]] = []
    for percent, judge in stages(plan, traffic=traffic, gate=gate):
        rollout = _rollout(plan, percent, status_url=status_url, gitops_repo=gitops_repo,
                           run=run, registry=registry, timeout_s=window.wait_timeout_s)  # fmt: skip
        analysis = judge(plan, rollout)
        steps.append({"percent": percent, **json.loads(analysis.to_json())})
        print(f"nexus-release: step {percent} %: {analysis.decision}: "
              f"{'; '.join(analysis.reasons)}")  # fmt: skip
        if analysis.decision != "promote":
            break
    return summarize(steps)
