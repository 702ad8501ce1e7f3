"""A release as an MLflow run: the evidence of one canary judgement, linked from its version.

One experiment per registered model (``releases/<model>``), one run per pipeline run
(tag ``nexus.pipeline_run``): parameters (version, canary percent, environment, Git
commit, thresholds), the canary's and the stable revision's signals as metrics with a step
per second into the window (so MLflow's own charts plot them), the report and the chart
as artifacts (the report is also the run's description, tag ``mlflow.note.content``), and
the outcome as the ``outcome`` tag, set once promote, rollback or the exit handler knows it.

MLflow's registry UI links a version to a run only through ``run_id``/``run_link``, which
MLflow sets when the version is created (``MlflowClient.create_model_version``;
``update_model_version`` changes the description alone), and a version is registered
before it is released. So the version's description, which the version page renders as
Markdown, gets one ``Release evidence:`` line with the link (kept in place across
releases, the owner's text untouched), and the short tag ``release.evidence`` holds the
run's URL for programs.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from nexus.errors import RegistryError, ReleaseError
from nexus.release.evidence import SIGNALS, Points, Release, limits, window_start

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from nexus.release.analyze import Thresholds

EXPERIMENT_PREFIX: Final = "releases/"
PIPELINE_RUN_TAG: Final = "nexus.pipeline_run"
OUTCOME_TAG: Final = "outcome"
DECISION_TAG: Final = "decision"
EVIDENCE_TAG: Final = "release.evidence"
REPORT_FILE: Final = "report.md"
CHART_FILE: Final = "chart.svg"
ANALYSIS_FILE: Final = "analysis.json"
DESCRIPTION_LINE: Final = "Release evidence: "
_NOTE_TAG: Final = "mlflow.note.content"
_MAX_RUN_TAG: Final = 8000  # mlflow.utils.validation.MAX_TAG_VAL_LENGTH (3.x)
_BATCH: Final = 1000  # mlflow.utils.validation.MAX_ENTITIES_PER_BATCH
_RUN_ID: Final = re.compile(r"/runs/([0-9a-f]{32})$")


@dataclass(frozen=True, slots=True)
class EvidenceRun:
    run_id: str
    experiment_id: str
    url: str


@contextlib.contextmanager
def _mlflow(what: str) -> Iterator[None]:
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"{what}: {getattr(exc, 'message', exc)}") from exc


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI (its single-page app routes after ``#``)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"runs:/{run_id}"


def described(description: str, line: str) -> str:
    """``description`` with its ``Release evidence:`` line replaced by ``line`` (or added)."""
    kept = [part for part in description.splitlines() if not part.startswith(DESCRIPTION_LINE)]
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n\n".join(part for part in ("\n".join(kept), line) if part)


class Tracking:
    """Release runs of one MLflow tracking server."""

    def __init__(self, client: MlflowClient, *, tracking_uri: str) -> None:
        self._client = client
        self.tracking_uri = tracking_uri

    @classmethod
    def connect(cls, tracking_uri: str) -> Tracking:
        from nexus.registry.client import Registry

        Registry.connect(tracking_uri)  # the same checks and HTTP retry settings
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        return cls(client, tracking_uri=tracking_uri)

    def _experiment(self, model: str, *, create: bool) -> str | None:
        from mlflow.exceptions import MlflowException

        name = EXPERIMENT_PREFIX + model
        with _mlflow(f"experiment {name!r}"):
            found = self._client.get_experiment_by_name(name)
            if found is not None or not create:
                return None if found is None else str(found.experiment_id)
            try:
                return str(self._client.create_experiment(name, tags={"nexus.model": model}))
            except MlflowException:
                found = self._client.get_experiment_by_name(name)  # a concurrent release made it
                if found is None:
                    raise
                return str(found.experiment_id)

    def find(self, model: str, pipeline_run: str) -> EvidenceRun | None:
        """The evidence run of ``pipeline_run``, if its analysis got that far."""
        experiment = self._experiment(model, create=False)
        if experiment is None:
            return None
        quoted = pipeline_run.replace("\\", "\\\\").replace("'", "\\'")
        with _mlflow(f"runs of {model!r}"):
            runs = self._client.search_runs(
                [experiment], f"tags.`{PIPELINE_RUN_TAG}` = '{quoted}'", max_results=1
            )
        if not runs:
            return None
        run_id = runs[0].info.run_id
        return EvidenceRun(run_id, experiment, run_url(self.tracking_uri, experiment, run_id))

    def log_release(
        self,
        release: Release,
        analysis: Mapping[str, Any],
        thresholds: Thresholds,
        by_role: Mapping[str, Mapping[str, Points]],
        *,
        report: str,
        chart: str,
    ) -> EvidenceRun:
        """One finished run holding the release's numbers and files; a retry replaces it."""
        from mlflow.entities import Metric, Param

        experiment = self._experiment(release.model, create=True)
        assert experiment is not None  # created above
        previous = self.find(release.model, release.pipeline_run)
        params = {
            "model": release.model,
            "version": release.version,
            "environment": release.environment,
            "canary_percent": str(release.canary_percent),
            "steps": ",".join(str(p) for p in release.steps) or "-",
            "git_commit": release.git_commit or "-",
            "pipeline_run": release.pipeline_run or "-",
            "window_s": f"{float(analysis.get('window_s', 0.0)):g}",
            "max_error_ratio": f"{thresholds.max_error_ratio:g}",
            "max_p95_latency_ratio": f"{thresholds.max_p95_latency_ratio:g}",
            "min_canary_requests": str(thresholds.min_requests),
        }
        now_ms = int(time.time() * 1000)
        metrics = [Metric(k, v, now_ms, 0) for k, v in self._window_metrics(analysis, thresholds)]
        start = window_start(analysis)
        for signal in SIGNALS:
            for role, points in by_role.get(signal.key, {}).items():
                metrics += [
                    Metric(f"{signal.key}/{role}", v, int(t * 1000), max(0, round(t - start)))
                    for t, v in points
                ]
        tags = {
            PIPELINE_RUN_TAG: release.pipeline_run,
            DECISION_TAG: str(analysis["decision"]),
            OUTCOME_TAG: "pending",
            _NOTE_TAG: report[:_MAX_RUN_TAG],
        }
        name = f"{release.model} v{release.version} to {release.environment}"
        with _mlflow(f"the release run of {release.model} version {release.version}"):
            run = self._client.create_run(experiment, run_name=name, tags=tags)
            run_id = run.info.run_id
            self._client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
            for first in range(0, len(metrics), _BATCH):
                self._client.log_batch(run_id, metrics=metrics[first : first + _BATCH])
            self._client.log_text(run_id, report, REPORT_FILE)
            self._client.log_text(run_id, chart, CHART_FILE)
            self._client.log_text(run_id, json.dumps(dict(analysis), indent=2), ANALYSIS_FILE)
            self._client.set_terminated(run_id, "FINISHED")
            if previous is not None:
                self._client.delete_run(previous.run_id)
        return EvidenceRun(run_id, experiment, run_url(self.tracking_uri, experiment, run_id))

    @staticmethod
    def _window_metrics(
        analysis: Mapping[str, Any], thresholds: Thresholds
    ) -> list[tuple[str, float]]:
        """What the judgement compared: the whole window's values, and each limit."""
        found: list[tuple[str, float]] = []
        for role in ("canary", "stable"):
            stats = analysis.get(role) or {}
            for key in ("requests", "errors", *(s.key for s in SIGNALS)):
                if stats.get(key) is not None:
                    found.append((f"window/{role}_{key}", float(stats[key])))
        for step in analysis.get("steps", ()):
            canary = step.get("canary") or {}
            for key in ("requests", "errors", *(s.key for s in SIGNALS)):
                if canary.get(key) is not None:
                    found.append((f"step_{step['percent']}/canary_{key}", float(canary[key])))
            found.append((f"step_{step['percent']}/promote", float(step["decision"] == "promote")))
        if analysis.get("canary") is not None:
            for key, limit in limits(analysis.get("stable"), thresholds).items():
                if limit is not None:
                    found.append((f"limit/{key}", limit))
        return found

    def link_version(self, release: Release, run: EvidenceRun, *, decision: str) -> None:
        """The version page links to the run: a Markdown line of its description, and a tag."""
        what = f"model {release.model!r} version {release.version}"
        with _mlflow(what):
            version = self._client.get_model_version(release.model, release.version)
            line = f"{DESCRIPTION_LINE}[{decision}, run {run.run_id[:8]}]({run.url})"
            self._client.update_model_version(
                release.model, release.version, described(version.description or "", line)
            )
            self._client.set_model_version_tag(
                release.model, release.version, EVIDENCE_TAG, run.url
            )

    def set_outcome(self, model: str, pipeline_run: str, outcome: str) -> EvidenceRun | None:
        """Tag the evidence run of ``pipeline_run`` with how the release ended (if it has one)."""
        run = self.find(model, pipeline_run)
        if run is not None:
            with _mlflow(f"the outcome of run {run.run_id}"):
                self._client.set_tag(run.run_id, OUTCOME_TAG, outcome)
        return run

    def linked(self, model: str, version: str) -> EvidenceRun | None:
        """The run ``release.evidence`` links, if it is the evidence of the last release."""
        from nexus.registry import conventions as c

        with _mlflow(f"model {model!r} version {version}"):
            tags = dict(self._client.get_model_version(model, version).tags or {})
            match = _RUN_ID.search(tags.get(EVIDENCE_TAG, ""))
            if match is None:
                return None
            run = self._client.get_run(match[1])
        if run.data.tags.get(PIPELINE_RUN_TAG) != tags.get(c.RELEASE_RUN):
            return None  # an earlier release's: the last one failed before its analysis
        experiment = str(run.info.experiment_id)
        return EvidenceRun(match[1], experiment, run_url(self.tracking_uri, experiment, match[1]))

    def analysis(self, run: EvidenceRun) -> dict[str, Any]:
        """The analysis the run records (its ``analysis.json``)."""
        with tempfile.TemporaryDirectory(prefix="nexus-evidence-") as tmp:
            with _mlflow(f"artifact {ANALYSIS_FILE} of run {run.run_id}"):
                got = self._client.download_artifacts(run.run_id, ANALYSIS_FILE, tmp)
            try:
                found: dict[str, Any] = json.loads(Path(got).read_text(encoding="utf-8"))
            except ValueError as exc:
                raise RegistryError(f"{ANALYSIS_FILE} of run {run.run_id}: {exc}") from exc
        return found

    def download(self, run: EvidenceRun, stem: Path) -> tuple[Path, Path]:
        """The run's report and chart as ``<stem>.md`` and ``<stem>.svg``."""
        stem.parent.mkdir(parents=True, exist_ok=True)
        paths = (stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".svg"))
        with tempfile.TemporaryDirectory(prefix="nexus-evidence-") as tmp:
            for artifact, target in zip((REPORT_FILE, CHART_FILE), paths, strict=True):
                with _mlflow(f"artifact {artifact} of run {run.run_id}"):
                    got = self._client.download_artifacts(run.run_id, artifact, tmp)
                shutil.move(got, target)
        return paths


@dataclass(frozen=True, slots=True)
class LocalEvidence:
    report: Path
    chart: Path
    run: EvidenceRun
    analysis: dict[str, Any]  # Analysis.to_json, as the analyze step returned it


def save_local(tracking_uri: str, model: str, version: str, stem: Path) -> LocalEvidence | None:
    """The report and chart of the version's last release beside ``stem`` (``.md``, ``.svg``).

    ``None`` when that release left no evidence run (it failed before its analysis).
    """
    try:
        tracking = Tracking.connect(tracking_uri)
        run = tracking.linked(model, version)
        if run is None:
            return None
        report, chart = tracking.download(run, stem)
        analysis = tracking.analysis(run)
    except RegistryError as exc:
        raise ReleaseError(f"cannot fetch the release evidence from MLflow: {exc}") from exc
    return LocalEvidence(report, chart, run, analysis)


def record_outcome(tracking_uri: str, model: str, pipeline_run: str, outcome: str) -> None:
    """From the steps that end a release: its evidence run (if any) says how it ended."""
    try:
        Tracking.connect(tracking_uri).set_outcome(model, pipeline_run, outcome)
    except RegistryError as exc:
        raise ReleaseError(f"cannot record the outcome on the release run: {exc}") from exc


def evidence_step(
    *,
    tracking_uri: str,
    prometheus_url: str,
    plan_json: str,
    analysis_json: str,
    thresholds: Thresholds,
    run: str,
) -> tuple[str, str, EvidenceRun]:
    """The analyze step's second half: report and chart, the MLflow run, the version's link.

    The chart queries the window again as a range (``analyze.series``); should Prometheus
    fail now, after it answered the judgement's queries, the report and the run still
    record the judgement and say the chart has no data. Returns (report, chart SVG, run).
    """
    from nexus.registry import conventions as c
    from nexus.registry.client import Registry
    from nexus.release.analyze import Prometheus, queries, series
    from nexus.release.evidence import chart, report, role_series
    from nexus.release.gate import log_verdict, report_section
    from nexus.release.gate_stage import verdict_from
    from nexus.release.plan import ReleasePlan

    plan = ReleasePlan.from_json(plan_json)
    analysis: dict[str, Any] = json.loads(analysis_json)
    try:
        tags = Registry.connect(tracking_uri).version(plan.model, plan.version).tags
    except RegistryError as exc:
        raise ReleaseError(f"cannot read the version for its release run: {exc}") from exc
    # The share the candidate was last judged at: 0 when the gate blocked it; 100 when it
    # went straight there (a first release, or a gate passed with no traffic step after it).
    judged = analysis.get("canary") or analysis["decision"] == "blocked"
    release = Release(
        model=plan.model,
        version=plan.version,
        environment=plan.environment,
        canary_percent=int(analysis.get("percent", 100)) if judged else 100,
        steps=tuple(int(step["percent"]) for step in analysis.get("steps", ())),
        git_commit=tags.get(c.RELEASE_GIT_COMMIT, "") if tags.get(c.RELEASE_RUN) == run else "",
        pipeline_run=run,
    )
    promql: dict[str, str] = {}
    measured: dict[str, dict[str, Points]] = {}
    note = ""
    canary, stable = analysis.get("canary"), analysis.get("stable")
    if canary and stable:
        revisions = [canary["revision"], stable["revision"]]
        window_s = float(analysis["window_s"])
        end = float(analysis.get("window_end", time.time()))
        promql = queries(plan.model, revisions, window_s, runtime=plan.runtime)
        # The chart spans every step of the canary (the last one's window when one step).
        span = end - float(analysis.get("span_start", end - window_s))
        try:
            measured = series(
                Prometheus(prometheus_url),
                plan.model,
                revisions,
                start=end - span,
                end=end,
                step=max(1.0, span / 60),
                # Several scrapes per point: 15 s PodMonitors (platform/k8s/monitoring), 5 s
                # locally (nexus.local.prometheus).
                rate_window_s=max(15.0, window_s / 4),
                runtime=plan.runtime,
            )
        except ReleaseError as exc:
            note = f"no chart data: {exc}"
    by_role = role_series(analysis, measured)
    verdict = verdict_from(analysis)
    gate = "" if verdict is None else report_section(verdict)
    markdown = report(release, analysis, thresholds, promql, note=note, gate=gate)
    svg = chart(release, analysis, thresholds, by_role, note="no data" if note else "")
    try:
        tracking = Tracking.connect(tracking_uri)
        evidence = tracking.log_release(
            release, analysis, thresholds, by_role, report=markdown, chart=svg
        )
        tracking.link_version(release, evidence, decision=str(analysis["decision"]))
        if verdict is not None:
            log_verdict(tracking_uri, evidence.run_id, verdict)
    except RegistryError as exc:
        raise ReleaseError(f"cannot record the release run in MLflow: {exc}") from exc
    print(f"nexus-release: evidence in MLflow: {evidence.url}")
    return markdown, svg, evidence
