"""The release pipeline (KFP v2): resolve → render → commit → wait → analyze → promote | roll back.

Components are lightweight Python components whose bodies call ``nexus.release``; they
install nothing at run time, so the base image must already hold ``nexus`` with its
``release`` extra: ``RELEASE_IMAGE``, the Dockerfile's ``release`` target (git included).
``kfp.local`` runs the same components in subprocesses of the current interpreter and
ignores the Kubernetes settings below.

On a cluster (KFP 2.17): the steps that push to Git (commit, promote, rollback and the
exit handler, which reverts a failed canary) mount the Secret named by ``git_secret`` at
``git_credentials.MOUNT_PATH`` (``kfp.kubernetes.use_secret_as_volume``); the run goes
under the ``nexus-release`` ServiceAccount (``SERVICE_ACCOUNT``, given at submission,
``platform/k8s/pipelines``), whose RBAC lets the wait step read the InferenceService
and Argo CD's Application. The URLs of MLflow, Prometheus and the status API default to
``IN_CLUSTER``: the in-cluster Services of the charts the platform documents.

The exit handler takes a failed run's canary out of traffic and records the outcome in
the registry whatever happened; steps whose result depends on the world (registry, Git,
the cluster, Prometheus, the clock) never come from KFP's cache; the commit step is
retried (push races are handled inside it too, this covers transient Git outages).

``pipelines/release.py`` re-exports ``release`` and compiles it to
``pipelines/compiled/release.yaml``; the definitions live in the package so that the
``nexus`` command and the release image can import them without the repository.
"""

# No `from __future__ import annotations` here, unlike everywhere else: KFP reads the
# components' annotations as live types to build their interfaces, and runs each body
# as a standalone module, so annotations must be expressions that evaluate there too
# (hence the inline NamedTuple of `analyze`).
from typing import Final, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import HTML, Artifact, Markdown, Output, PipelineTaskFinalStatus

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
    tracking_uri: str, model_name: str, version: str, environment: str, namespace: str, run: str
) -> str:
    """The version exists and its tags are valid; fails before any side effect."""
    from nexus.release.record import step_errors
    from nexus.release.resolve import resolve_step

    with step_errors(tracking_uri, run, "resolve", model=model_name, version=version):
        return resolve_step(
            tracking_uri=tracking_uri,
            model=model_name,
            version=version,
            environment=environment,
            namespace=namespace,
        )


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def render(plan: str, canary_percent: int) -> str:
    """The InferenceService of the first rollout (canary, or 100 % for a first release)."""
    from nexus.release.render import render_step

    return render_step(plan_json=plan, canary_percent=canary_percent)


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def commit(gitops_repo: str, tracking_uri: str, plan: str, manifest: str, run: str) -> str:
    """Commit and push the manifest (idempotent); the version becomes ``challenger``."""
    from nexus.release.record import step_errors
    from nexus.release.rollout import commit_first

    with step_errors(tracking_uri, run, "commit", plan=plan):
        return commit_first(
            tracking_uri=tracking_uri,
            gitops_repo=gitops_repo,
            plan_json=plan,
            manifest=manifest,
            run=run,
        )


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def wait(
    tracking_uri: str,
    status_url: str,
    gitops_repo: str,
    plan: str,
    commit_sha: str,
    canary_percent: int,
    timeout_s: float,
    run: str,
) -> str:
    """Until Argo CD synced the commit and the predictor's traffic is split as asked."""
    from nexus.release.record import step_errors
    from nexus.release.rollout import wait_first

    with step_errors(tracking_uri, run, "wait", plan=plan):
        return wait_first(
            status_url=status_url,
            gitops_repo=gitops_repo,
            plan_json=plan,
            commit=commit_sha,
            canary_percent=canary_percent,
            timeout_s=timeout_s,
        )


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def analyze(
    tracking_uri: str,
    prometheus_url: str,
    plan: str,
    rollout: str,
    window_s: float,
    max_error_ratio: float,
    max_p95_latency_ratio: float,
    min_canary_requests: int,
    canary_percent: int,
    run: str,
    analysis: Output[Artifact],
    report: Output[Markdown],
    chart: Output[HTML],
) -> NamedTuple("Judgement", [("decision", str), ("summary", str)]):  # type: ignore[valid-type]
    """Canary vs stable over the window: the decision; the numbers, a report and a chart.

    ``report`` (Markdown) and ``chart`` (HTML) are what the KFP UI renders on the run; the
    same report and chart go to the release's MLflow run (``nexus.release.tracking``).
    """
    import json

    from nexus.release.analyze import Thresholds, analyze_step
    from nexus.release.evidence import chart_html
    from nexus.release.record import step_errors
    from nexus.release.tracking import evidence_step

    with step_errors(tracking_uri, run, "analyze", plan=plan):
        summary = analyze_step(
            prometheus_url=prometheus_url,
            plan_json=plan,
            rollout_json=rollout,
            window_s=window_s,
            max_error_ratio=max_error_ratio,
            max_p95_latency_ratio=max_p95_latency_ratio,
            min_requests=min_canary_requests,
        )
        markdown, svg, evidence = evidence_step(
            tracking_uri=tracking_uri,
            prometheus_url=prometheus_url,
            plan_json=plan,
            analysis_json=summary,
            canary_percent=canary_percent,
            thresholds=Thresholds(max_error_ratio, max_p95_latency_ratio, min_canary_requests),
            run=run,
        )
    with open(analysis.path, "w", encoding="utf-8") as out:
        out.write(summary)
    with open(report.path, "w", encoding="utf-8") as out:
        out.write(markdown)
    with open(chart.path, "w", encoding="utf-8") as out:
        out.write(chart_html(svg, "canary against stable"))
    decision = json.loads(summary)["decision"]
    for artifact in (analysis, report, chart):
        artifact.metadata["decision"] = decision
        artifact.metadata["mlflow_run"] = evidence.url
    return (decision, summary)


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def promote(
    tracking_uri: str,
    gitops_repo: str,
    status_url: str,
    plan: str,
    summary: str,
    run: str,
    timeout_s: float,
) -> str:
    """100 % on the new version, then ``champion`` moves to it."""
    from nexus.release.record import step_errors
    from nexus.release.rollout import promote_step

    with step_errors(tracking_uri, run, "promote", plan=plan):
        return promote_step(
            tracking_uri=tracking_uri,
            gitops_repo=gitops_repo,
            status_url=status_url,
            plan_json=plan,
            analysis_json=summary,
            run=run,
            timeout_s=timeout_s,
        )


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def rollback(
    tracking_uri: str,
    gitops_repo: str,
    status_url: str,
    plan: str,
    summary: str,
    run: str,
    timeout_s: float,
) -> str:
    """``canaryTrafficPercent: 0``: the champion serves everything again."""
    from nexus.release.record import step_errors
    from nexus.release.rollout import rollback_step

    with step_errors(tracking_uri, run, "rollback", plan=plan):
        return rollback_step(
            tracking_uri=tracking_uri,
            gitops_repo=gitops_repo,
            status_url=status_url,
            plan_json=plan,
            analysis_json=summary,
            run=run,
            timeout_s=timeout_s,
        )


@dsl.component(base_image=RELEASE_IMAGE, install_kfp_package=False)
def record_outcome(
    tracking_uri: str,
    gitops_repo: str,
    model_name: str,
    version: str,
    run: str,
    status: PipelineTaskFinalStatus,
) -> None:
    """Exit handler: a failed run's canary leaves traffic; the version is tagged ``failed``."""
    from nexus.release.rollout import outcome_step

    outcome_step(
        tracking_uri=tracking_uri,
        gitops_repo=gitops_repo,
        model=model_name,
        version=version,
        run=run,
        state=status.state,
        error=status.error_message or "",
    )


def _pushes(task: dsl.PipelineTask, git_secret: str) -> dsl.PipelineTask:
    """A step that pushes to the GitOps repository gets the Git credentials Secret."""
    return kubernetes.use_secret_as_volume(task, secret_name=git_secret, mount_path=MOUNT_PATH)


@dsl.pipeline(name=PIPELINE_NAME, description="Release an MLflow model version through GitOps")
def release(
    model_name: str,
    version: str,
    environment: str = "prod",
    canary_percent: int = 10,
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
    run = dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    outcome = record_outcome(
        tracking_uri=tracking_uri,
        gitops_repo=gitops_repo,
        model_name=model_name,
        version=version,
        run=run,
    ).set_caching_options(False)
    _pushes(outcome, git_secret)
    with dsl.ExitHandler(outcome, name="release"):
        planned = resolve(
            tracking_uri=tracking_uri,
            model_name=model_name,
            version=version,
            environment=environment,
            namespace=namespace,
            run=run,
        )
        planned.set_caching_options(False)
        manifest = render(plan=planned.output, canary_percent=canary_percent)
        pushed = commit(
            gitops_repo=gitops_repo,
            tracking_uri=tracking_uri,
            plan=planned.output,
            manifest=manifest.output,
            run=run,
        )
        pushed.set_caching_options(False).set_retry(num_retries=3, backoff_duration="5s")
        _pushes(pushed, git_secret)
        rolled = wait(
            tracking_uri=tracking_uri,
            status_url=status_url,
            gitops_repo=gitops_repo,
            plan=planned.output,
            commit_sha=pushed.output,
            canary_percent=canary_percent,
            timeout_s=wait_timeout_s,
            run=run,
        ).set_caching_options(False)
        judged = analyze(
            tracking_uri=tracking_uri,
            prometheus_url=prometheus_url,
            plan=planned.output,
            rollout=rolled.output,
            window_s=analysis_window_s,
            max_error_ratio=max_error_ratio,
            max_p95_latency_ratio=max_p95_latency_ratio,
            min_canary_requests=min_canary_requests,
            canary_percent=canary_percent,
            run=run,
        ).set_caching_options(False)
        decision, summary = judged.outputs["decision"], judged.outputs["summary"]
        with dsl.If(decision == "promote", name="canary-passed"):
            promoted = promote(
                tracking_uri=tracking_uri,
                gitops_repo=gitops_repo,
                status_url=status_url,
                plan=planned.output,
                summary=summary,
                run=run,
                timeout_s=wait_timeout_s,
            ).set_caching_options(False)
            _pushes(promoted, git_secret)
        with dsl.Else(name="canary-failed"):
            rolled_back = rollback(
                tracking_uri=tracking_uri,
                gitops_repo=gitops_repo,
                status_url=status_url,
                plan=planned.output,
                summary=summary,
                run=run,
                timeout_s=wait_timeout_s,
            ).set_caching_options(False)
            _pushes(rolled_back, git_secret)
