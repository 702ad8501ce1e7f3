"""The release's steps, in order: the one list the KFP pipeline and the inline run both follow.

``STEPS`` is the graph: resolve → canary (every traffic step, ``nexus.release.canary``)
→ promote when the canary passed, else roll back; ``EXIT`` is the exit handler, run
whatever happened. ``nexus.release.pipeline`` turns each step into a KFP task
(``dsl.If``/``dsl.Else`` for the two branches, ``dsl.ExitHandler`` for ``EXIT``) and
``nexus.release.run.run_inline`` calls the same bodies in this process.

A body's keyword arguments are named after what feeds them: a pipeline parameter
(``tracking_uri``, ``model_name``, ...), ``run`` (the pipeline run's name), or an
earlier step's ``output`` (``plan``, ``summary``); the KFP component of a step has the
same inputs (``tests/release/test_stepped.py``). Each body records its own failure in the
registry (``record.step_errors``): KFP tells an exit handler only that "a task failed".

A check before any traffic, the quality gate at 0 % when the model has an evaluation set,
is one more stage in front of the traffic steps (``canary.stages``, ``gate_stage``); a
candidate it blocks goes down the ``failed`` branch, whose rollback records ``blocked``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, Literal

from nexus.release.record import step_errors

if TYPE_CHECKING:
    from nexus.release.rollout import Ending

Branch = Literal["always", "passed", "failed"]
# What the canary's summary decides, for the branches (``analyze.Decision``).
PASSED: Final = "promote"


@dataclass(frozen=True, slots=True)
class Step:
    """One task of the graph."""

    name: str
    body: Callable[..., str]
    # The name later steps take this step's result by ("": none does).
    output: str = ""
    # ``passed``: only when the canary's decision is ``PASSED``; ``failed``: otherwise.
    branch: Branch = "always"
    # Pushes to the GitOps repository: on a cluster the step mounts the Git credentials.
    pushes: bool = False


def resolve(
    *, tracking_uri: str, model_name: str, version: str, environment: str, namespace: str,
    steps: str, canary_percent: int, run: str,
) -> str:  # fmt: skip
    """The version exists, its tags, the canary's steps and its evaluation set (if any) are
    valid: the plan (JSON)."""
    from nexus.release.gate_stage import gate_inputs
    from nexus.release.plan import ReleasePlan
    from nexus.release.resolve import resolve_step

    with step_errors(tracking_uri, run, "resolve", model=model_name, version=version):
        plan = resolve_step(
            tracking_uri=tracking_uri,
            model=model_name,
            version=version,
            environment=environment,
            namespace=namespace,
            steps=steps,
            canary_percent=canary_percent,
        )
        if ReleasePlan.from_json(plan).quality_gate:
            gate_inputs(tracking_uri, model_name)  # a bad set fails here, before any commit
        return plan


Evidence = Callable[[str, str, str], None]


def canary(
    *, tracking_uri: str, gitops_repo: str, status_url: str, prometheus_url: str, plan: str,
    analysis_window_s: float, max_error_ratio: float, max_p95_latency_ratio: float,
    min_canary_requests: int, wait_timeout_s: float, run: str, evidence: Evidence | None = None,
) -> str:  # fmt: skip
    """Every traffic step, each judged; the summary (JSON). ``evidence`` gets the report,
    the chart (SVG) and the MLflow run's URL (the KFP component writes them as artifacts)."""
    from nexus.release.analyze import Thresholds
    from nexus.release.canary import Window, run_canary
    from nexus.release.plan import ReleasePlan
    from nexus.release.tracking import evidence_step

    thresholds = Thresholds(max_error_ratio, max_p95_latency_ratio, min_canary_requests)
    with step_errors(tracking_uri, run, "canary", plan=plan):
        summary = run_canary(
            plan=ReleasePlan.from_json(plan),
            tracking_uri=tracking_uri,
            gitops_repo=gitops_repo,
            status_url=status_url,
            prometheus_url=prometheus_url,
            window=Window(analysis_window_s, thresholds, wait_timeout_s),
            run=run,
        )
        text = json.dumps(summary, sort_keys=True)
        print(f"nexus-release: decision {summary['decision']}: {'; '.join(summary['reasons'])}")
        markdown, svg, run_evidence = evidence_step(
            tracking_uri=tracking_uri,
            prometheus_url=prometheus_url,
            plan_json=plan,
            analysis_json=text,
            thresholds=thresholds,
            run=run,
        )
    if evidence is not None:
        evidence(markdown, svg, run_evidence.url)
    return text


def end(
    ending: Ending, *, tracking_uri: str, gitops_repo: str, status_url: str, plan: str,
    summary: str, run: str, wait_timeout_s: float,
) -> str:  # fmt: skip
    """The canary's end, one body for both branches (``rollout.end_step``): ``promote``, 100 %
    on the new version and ``champion`` moves to it; ``rollback``, ``canaryTrafficPercent: 0``
    and the champion serves everything again."""
    from nexus.release.rollout import end_step

    with step_errors(tracking_uri, run, ending, plan=plan):
        return end_step(
            ending,
            tracking_uri=tracking_uri,
            gitops_repo=gitops_repo,
            status_url=status_url,
            plan_json=plan,
            analysis_json=summary,
            run=run,
            timeout_s=wait_timeout_s,
        )


def record_outcome(
    *, tracking_uri: str, gitops_repo: str, model_name: str, version: str, run: str, state: str,
    error: str,
) -> str:  # fmt: skip
    """Exit handler: a failed run's canary leaves traffic; the registry records the outcome."""
    from nexus.release.rollout import outcome_step

    return outcome_step(
        tracking_uri=tracking_uri,
        gitops_repo=gitops_repo,
        model=model_name,
        version=version,
        run=run,
        state=state,
        error=error,
    )


STEPS: Final = (
    Step("resolve", resolve, output="plan"),
    Step("canary", canary, output="summary", pushes=True),
    Step("promote", partial(end, "promote"), branch="passed", pushes=True),
    Step("rollback", partial(end, "rollback"), branch="failed", pushes=True),
)
EXIT: Final = Step("record-outcome", record_outcome, pushes=True)


def decision(summary: str) -> str:
    """The canary's decision in its summary."""
    return str(json.loads(summary)["decision"])


def inputs(step: Step, values: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``step.body`` that ``values`` has (all it requires)."""
    found: dict[str, Any] = {}
    for name, parameter in inspect.signature(step.body).parameters.items():
        if name in values:
            found[name] = values[name]
        elif parameter.default is inspect.Parameter.empty:
            raise TypeError(f"step {step.name} needs {name!r}, which nothing provides")
    return found


def call(name: str, values: Mapping[str, Any]) -> str:
    """The body of the step named ``name``, its inputs taken from ``values``.

    What each KFP component runs, handing over its ``locals()``: a component's inputs are
    its step's keyword arguments (``tests/release/test_stepped.py``).
    """
    step = next(step for step in (*STEPS, EXIT) if step.name == name)
    return step.body(**inputs(step, values))


def run_steps(values: Mapping[str, Any]) -> str:
    """The graph in this process, in its order, without KFP; the outcome the registry records.

    The exit handler's contract holds here too: whatever failed, no canary is left in
    traffic by this run and the registry says so; the failure is then re-raised.
    """
    known = dict(values)
    state, error = "SUCCEEDED", ""
    try:
        for step in STEPS:
            if step.branch != "always":
                passed = decision(known["summary"]) == PASSED
                if passed != (step.branch == "passed"):
                    continue
            result = step.body(**inputs(step, known))
            if step.output:
                known[step.output] = result
    except Exception as exc:
        state, error = "FAILED", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        status = EXIT.body(**inputs(EXIT, {**known, "state": state, "error": error}))
    return status
