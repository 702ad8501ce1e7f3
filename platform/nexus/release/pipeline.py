"""The release pipeline (KFP v2): the graph of ``nexus.release.steps`` as KFP tasks.

resolve → canary (each traffic step committed, waited for and judged) → promote | roll
back, in an exit handler that records the outcome. The components below only declare
each step's interface to KFP (inputs, outputs, artifacts) and hand their inputs, their
``locals()``, to the step's body (``steps.call``); ``release`` builds the tasks from
``steps.STEPS``. KFP builds a component's interface from its signature and runs the
function's own source as a module (kfp 2.17, ``kfp/dsl/component_factory.py``), and names
its task and executor after the function: so promote and rollback stay two components with
the same inputs, written out in each signature, and one body (``steps.end``).

Components are lightweight Python components whose bodies call ``nexus.release``; they
install nothing at run time, so the base image must already hold ``nexus`` with its
``release`` extra: ``RELEASE_IMAGE``, the Dockerfile's ``release`` target (git included).
``kfp.local`` runs the same components in subprocesses of the current interpreter and
ignores the Kubernetes settings below.

On a cluster (KFP 2.17): the steps that push to Git (``Step.pushes``: canary, promote,
rollback and the exit handler, which reverts a failed canary) mount the Secret named by
``git_secret`` at ``git_credentials.MOUNT_PATH`` (``kfp.kubernetes.use_secret_as_volume``);
the run goes under the ``nexus-release`` ServiceAccount (``SERVICE_ACCOUNT``, given at
submission, ``platform/k8s/pipelines``), whose RBAC lets the canary's waits read the
InferenceService and Argo CD's Application. The URLs of MLflow, Prometheus and the
status API default to ``IN_CLUSTER``: the in-cluster Services of the charts the platform
documents.

The exit handler takes a failed run's canary out of traffic and records the outcome in
the registry whatever happened; steps whose result depends on the world (registry, Git,
the cluster, Prometheus, the clock) never come from KFP's cache. The canary step is not
retried by KFP (a retry would start its traffic steps over); it retries its own commits
(``canary.COMMIT_ATTEMPTS``) and push races (``gitops.publish``).

``pipelines/release.py`` re-exports ``release`` and compiles it to
``pipelines/compiled/release.yaml``; the definitions live in the package so that the
``nexus`` command and the release image can import them without the repository.
"""

# No `from __future__ import annotations` here, unlike everywhere else: KFP reads the
# components' annotations as live types to build their interfaces, and runs each body
# as a standalone module, so annotations must be expressions that evaluate there too
# (hence the inline NamedTuple of `canary`).
from pathlib import Path
from typing import Any, Final, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Markdown, Output, PipelineTaskFinalStatus

from nexus.release import steps as graph
from nexus.release.git_credentials import MOUNT_PATH

# The transformer image does not carry MLflow or KFP; releases run in their own image
# (same Dockerfile and lock, `.[release]` installed, plus git; it brings kfp, so nothing
# installs at run time). tests/manifests/test_dockerfile.py checks the Dockerfile builds it.
RELEASE_IMAGE: Final = "ghcr.io/nexus-serving/nexus-release:0.1.0"
PIPELINE_NAME: Final = "nexus-release"
SERVICE_ACCOUNT: Final = "nexus-release"
GIT_SECRET: Final = "nexus-release-git"  # noqa: S105 - a Secret's name, not its value
# Defaults of the pipeline's URL parameters: where a run on the cluster finds its peers.
IN_CLUSTER: Final = {
    # The MLflow tracking server's Service (chart or manifest named mlflow, namespace mlflow).
    "tracking_uri": "http://mlflow.mlflow.svc.cluster.local:5000",
    # kube-prometheus-stack installed as release `kube-prometheus-stack` in `monitoring`
    # (the PrometheusRule and PodMonitors carry `release: kube-prometheus-stack`).
    "prometheus_url": "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090",
    # Argo CD's Application and the InferenceService, as resources of the Kubernetes API
    # (nexus.release.wait.KubernetesStatus); the local platform passes its sync loop's URL.
    "status_url": "https://kubernetes.default.svc",
}


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def resolve(
    tracking_uri: str,
    model_name: str,
    version: str,
    environment: str,
    namespace: str,
    steps: str,
    canary_percent: int,
    run: str,
) -> str:
    """The version exists, its tags and the canary's steps are valid; before any side effect."""
    from nexus.release.steps import call

    return call("resolve", locals())


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def canary(
    tracking_uri: str,
    gitops_repo: str,
    status_url: str,
    prometheus_url: str,
    plan: str,
    analysis_window_s: float,
    max_error_ratio: float,
    max_p95_latency_ratio: float,
    min_canary_requests: int,
    wait_timeout_s: float,
    run: str,
    analysis: Output[Artifact],
    report: Output[Markdown],
    chart: Output[HTML],
) -> NamedTuple("Judgement", [("decision", str), ("summary", str)]):  # type: ignore[valid-type]
    """Each traffic step committed, waited for and judged; the decision, a report, a chart.

    ``report`` (Markdown) and ``chart`` (HTML) are what the KFP UI renders on the run; the
    same report and chart go to the release's MLflow run (``nexus.release.tracking``).
    """
    import json

    from nexus.release.evidence import chart_html
    from nexus.release.steps import call

    written: dict[str, str] = {}

    def keep(markdown: str, svg: str, url: str) -> None:
        written.update(markdown=markdown, svg=svg, url=url)

    summary = call("canary", {**locals(), "evidence": keep})
    with open(analysis.path, "w", encoding="utf-8") as out:
        out.write(summary)
    with open(report.path, "w", encoding="utf-8") as out:
        out.write(written["markdown"])
    with open(chart.path, "w", encoding="utf-8") as out:
        out.write(chart_html(written["svg"], "canary against stable"))
    decision = json.loads(summary)["decision"]
    for artifact in (analysis, report, chart):
        artifact.metadata["decision"] = decision
        artifact.metadata["mlflow_run"] = written["url"]
    return (decision, summary)


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def promote(
    tracking_uri: str,
    gitops_repo: str,
    status_url: str,
    plan: str,
    summary: str,
    run: str,
    wait_timeout_s: float,
) -> str:
    """100 % on the new version, then ``champion`` moves to it."""
    from nexus.release.steps import call

    return call("promote", locals())


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def rollback(
    tracking_uri: str,
    gitops_repo: str,
    status_url: str,
    plan: str,
    summary: str,
    run: str,
    wait_timeout_s: float,
) -> str:
    """``canaryTrafficPercent: 0``: the champion serves everything again."""
    from nexus.release.steps import call

    return call("rollback", locals())


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def record_outcome(
    tracking_uri: str,
    gitops_repo: str,
    model_name: str,
    version: str,
    run: str,
    status: PipelineTaskFinalStatus,
) -> None:
    """Exit handler: a failed run's canary leaves traffic; the registry records the outcome."""
    from nexus.release.steps import call

    call("record-outcome", {**locals(), "state": status.state, "error": status.error_message or ""})


# The KFP component of each step of ``steps.STEPS`` and ``steps.EXIT``, by step name.
COMPONENTS: Final = {
    "resolve": resolve,
    "canary": canary,
    "promote": promote,
    "rollback": rollback,
    "record-outcome": record_outcome,
}
# The pipeline's names for the branches of ``steps.Step.branch``.
BRANCHES: Final = {"passed": "canary-passed", "failed": "canary-failed"}


def _task(step: graph.Step, values: dict[str, Any], git_secret: Any) -> dsl.PipelineTask:
    """The step's task, its inputs taken from ``values``; never cached; Git mounted if it pushes."""
    component = COMPONENTS[step.name]
    wanted = component.component_spec.inputs or {}
    task = component(**{name: values[name] for name in wanted if name in values})
    task.set_caching_options(False)
    if step.pushes:
        kubernetes.use_secret_as_volume(task, secret_name=git_secret, mount_path=MOUNT_PATH)
    if step.output:
        outputs = task.outputs if len(task.outputs) > 1 else {step.output: task.output}
        values.update(outputs)
    return task


@dsl.pipeline(name=PIPELINE_NAME, description="Release an MLflow model version through GitOps")
def release(
    model_name: str,
    version: str,
    environment: str = "prod",
    canary_percent: int = 10,
    steps: str = "",
    analysis_window_s: float = 600.0,
    max_error_ratio: float = 0.02,
    max_p95_latency_ratio: float = 1.5,
    min_canary_requests: int = 10,
    gitops_repo: str = "",
    prometheus_url: str = IN_CLUSTER["prometheus_url"],
    tracking_uri: str = IN_CLUSTER["tracking_uri"],
    status_url: str = IN_CLUSTER["status_url"],
    namespace: str = "nexus",
    wait_timeout_s: float = 900.0,
    git_secret: str = GIT_SECRET,
) -> None:
    values: dict[str, Any] = {**locals(), "run": dsl.PIPELINE_JOB_NAME_PLACEHOLDER}
    outcome = _task(graph.EXIT, values, git_secret)
    with dsl.ExitHandler(outcome, name="release"):
        for step in graph.STEPS:
            if step.branch == "always":
                _task(step, values, git_secret)
            elif step.branch == "passed":
                with dsl.If(values["decision"] == graph.PASSED, name=BRANCHES["passed"]):
                    _task(step, values, git_secret)
            else:
                with dsl.Else(name=BRANCHES["failed"]):
                    _task(step, values, git_secret)


def compile_pipeline(target: Path) -> None:
    """Compile deterministically: same sources, same bytes (the YAML is committed)."""
    from kfp import compiler

    target.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(release, package_path=str(target))
