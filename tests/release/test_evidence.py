"""Release evidence from a real Prometheus into a real MLflow: report, chart, run, version link.

Prometheus serves a canary window backfilled with ``promtool tsdb create-blocks-from
openmetrics`` (known values at known times, labelled as the PodMonitors label the
queue-proxy's and vLLM's series): a canary answering 20 % 5xx and slower than the stable
revision. The analysis' own functions judge it, then ``tracking.evidence_step`` builds the
report and chart, logs the MLflow run and links it from the version, as the analyze
step does.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from nexus.manifests.pools import load_pools
from nexus.registry import conventions as c
from nexus.registry.client import Registry
from nexus.release import tracking
from nexus.release.analyze import Analysis, Prometheus, Thresholds, decide, measure, queries
from nexus.release.canary import summarize
from nexus.release.gate import GateVerdict
from nexus.release.gate_stage import stage_analysis
from nexus.release.plan import ReleasePlan
from nexus.release.resolve import default_pools_file
from tests.release.conftest import Mlflow
from tests.support.browser import chromium
from tests.support.processes import REPO, free_port, managed

MODEL = "evid"
CANARY, STABLE = f"{MODEL}-predictor-00002", f"{MODEL}-predictor-00001"
WINDOW_S = 120.0
STEP_S = 5
THRESHOLDS = Thresholds(max_error_ratio=0.02, max_p95_latency_ratio=1.5, min_requests=10)
PIPELINE_RUN = "nexus-release-20261203120000"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Window:
    prometheus_url: str
    end: float


def _openmetrics(end: float) -> str:
    """Counters every 5 s from ``end - 400`` to ``end``: canary 2 req/s with 0.4 5xx/s
    answering in (500, 1000] ms (first token in (0.2, 0.4] s), stable 8 req/s without 5xx
    in (100, 500] ms (first token in (0.1, 0.2] s)."""
    # No TYPE lines: series keep their names as Prometheus stores a scrape's (an OpenMetrics
    # counter would gain a `_total` suffix the queue-proxy's series do not have).
    lines: list[str] = []
    base = 'isvc="evid",namespace="nexus"'
    shapes = {
        CANARY: {"2xx": 1.6, "5xx": 0.4, "latency": "1000", "ttft": "0.4"},
        STABLE: {"2xx": 8.0, "5xx": 0.0, "latency": "500", "ttft": "0.2"},
    }
    times = range(int(end) - 400, int(end) + 1, STEP_S)
    for revision, shape in shapes.items():
        labels = f'{base},revision="{revision}"'
        rate = float(shape["2xx"]) + float(shape["5xx"])
        for code in ("2xx", "5xx"):
            name = f'revision_app_request_count{{{labels},response_code_class="{code}"}}'
            lines += [f"{name} {float(shape[code]) * (t - times[0])} {t}" for t in times]
        for family, top, bounds in (
            ("revision_app_request_latencies", shape["latency"], ("100", "500", "1000", "+Inf")),
            ("vllm:time_to_first_token_seconds", shape["ttft"], ("0.1", "0.2", "0.4", "+Inf")),
        ):
            # Every answer lands in the bucket that ends at `top`.
            for le in bounds:
                inside = bounds.index(le) >= bounds.index(top)
                name = f'{family}_bucket{{{labels},le="{le}"}}'
                lines += [f"{name} {rate * (t - times[0]) if inside else 0.0} {t}" for t in times]
        # The same answers as Knative 1.21's queue-proxy exports them (one OpenTelemetry
        # histogram in seconds, the status code as attribute: knative/serving
        # pkg/queue/request_metric.go), which the analysis reads once issue 15's queries land.
        top = str(int(shape["latency"]) / 1000)
        bounds = ("0.1", "0.5", "1.0", "+Inf")
        for code, share in (("200", shape["2xx"]), ("503", shape["5xx"])):
            family = "kn_serving_invocation_duration_seconds"
            otel = f'{labels},http_response_status_code="{code}"'
            for le in bounds:
                n = float(share) if bounds.index(le) >= bounds.index(top) else 0.0
                name = f'{family}_bucket{{{otel},le="{le}"}}'
                lines += [f"{name} {n * (t - times[0])} {t}" for t in times]
            name = f"{family}_count{{{otel}}}"
            lines += [f"{name} {float(share) * (t - times[0])} {t}" for t in times]
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def window(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Window]:
    """A real Prometheus whose TSDB holds one canary window ending 5 minutes ago."""
    for tool in ("prometheus", "promtool"):
        assert shutil.which(tool), f"{tool} missing: `make system-deps` installs prometheus"
    tmp = tmp_path_factory.mktemp("prometheus")
    end = float(int(time.time()) // 60 * 60 - 300)
    (tmp / "input.om").write_text(_openmetrics(end))
    data = tmp / "data"
    subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", "input.om", str(data)],
        cwd=tmp, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (tmp / "prometheus.yml").write_text(yaml.safe_dump({"scrape_configs": []}))
    port = free_port()
    args = ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}"]  # fmt: skip
    with managed(args, log=tmp / "prometheus.log", ready_url=f"http://127.0.0.1:{port}/-/ready"):
        yield Window(f"http://127.0.0.1:{port}", end)


def _plan() -> ReleasePlan:
    return ReleasePlan(model=MODEL, version="2", environment="local",
                       storage_uri="hf://acme/evid-v2", runtime="vllm", pool="a100",
                       champion="1")  # fmt: skip


def _judge(window: Window) -> Analysis:
    """What ``analyze.analyze`` computes at the window's end, without waiting for it."""
    stats = measure(Prometheus(window.prometheus_url), MODEL, [CANARY, STABLE], WINDOW_S,
                    at=window.end)  # fmt: skip
    decision, reasons = decide(stats[CANARY], stats[STABLE], THRESHOLDS)
    return Analysis(decision, reasons, WINDOW_S, stats[CANARY], stats[STABLE],
                    {"window_end": window.end})  # fmt: skip


@pytest.fixture(scope="module")
def registered(mlflow_server: Mlflow) -> Registry:
    """Versions 1 and 2 of the model; version 2 in canary by ``PIPELINE_RUN``."""
    registry = Registry.connect(mlflow_server.url)
    spec = c.ServingSpec(storage_uri="hf://acme/evid", runtime="vllm", gpu_pool="a100")
    pools = load_pools(default_pools_file())
    for _ in range(2):
        version = registry.register(MODEL, spec, pools).version
    assert version == "2"
    MlflowClient(mlflow_server.url).update_model_version(MODEL, "2", "Owner's notes.")
    registry.set_tags(MODEL, "2", {c.RELEASE_RUN: PIPELINE_RUN, c.RELEASE_GIT_COMMIT: COMMIT})
    return registry


def _step(mlflow: Mlflow, window: Window, analysis: Analysis) -> tuple[str, str, str]:
    markdown, svg, run = tracking.evidence_step(
        tracking_uri=mlflow.url,
        prometheus_url=window.prometheus_url,
        plan_json=_plan().to_json(),
        # One traffic step of 20 %, summarized as the canary step does.
        analysis_json=json.dumps(summarize([{"percent": 20, **json.loads(analysis.to_json())}])),
        thresholds=THRESHOLDS,
        run=PIPELINE_RUN,
    )
    return markdown, svg, run.url


def test_the_judgement_of_the_backfilled_window(window: Window) -> None:
    analysis = _judge(window)
    assert analysis.decision == "rollback"
    assert analysis.canary is not None
    assert analysis.stable is not None
    assert analysis.canary.requests == pytest.approx(2 * WINDOW_S, rel=0.05)
    assert analysis.canary.error_ratio == pytest.approx(0.2, abs=0.01)
    assert analysis.stable.error_ratio == 0


def test_evidence_report_chart_and_mlflow_run(
    mlflow_server: Mlflow, window: Window, registered: Registry, tmp_path: Path
) -> None:
    analysis = _judge(window)
    markdown, svg, url = _step(mlflow_server, window, analysis)

    # The report: decision, each threshold with both values, counts, window and PromQL.
    assert markdown.startswith(f"# Release of {MODEL} version 2 to local: rollback")
    assert "| 5xx ratio | 0.200 | 0.000 | above stable + 0.02: 0.020 | over |" in markdown
    assert "| p95 latency | 0.975 s | 0.480 s | above stable x 1.5 and stable + 0.05 s: " \
           "0.720 s | over |" in markdown  # fmt: skip
    assert "| p95 time to first token | 0.390 s | 0.195 s |" in markdown
    assert f"| requests | {2 * WINDOW_S:.0f} (48 5xx) | 960 (0 5xx) | below 10" in markdown
    assert f"| Git commit | `{COMMIT}` |" in markdown
    assert "120 s, " in markdown
    assert " UTC to " in markdown
    for expr in queries(MODEL, [CANARY, STABLE], WINDOW_S).values():
        assert f"  {expr}\n" in markdown
    # Every traffic step's judgement (here the one step of 20 %).
    assert "## Steps" in markdown
    assert f"| 20 % | 120 s | {2 * WINDOW_S:.0f} (48) | 0.200 | 0.975 s | 0.480 s | rollback: " \
           "canary 5xx ratio 0.200" in markdown  # fmt: skip
    # The chart: one panel per signal, both revisions and the threshold drawn.
    assert svg.startswith("<?xml")
    assert "</svg>" in svg
    for text in ("5xx ratio", "p95 latency", "p95 time to first token", "rollback above"):
        assert text in svg, text
    assert "no samples" not in svg

    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name(f"releases/{MODEL}")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert url == f"{mlflow_server.url}/#/experiments/{experiment.experiment_id}/runs/" \
                  f"{run.info.run_id}"  # fmt: skip
    assert run.info.status == "FINISHED"
    assert run.data.params["version"] == "2"
    assert run.data.params["canary_percent"] == "20"
    assert run.data.params["steps"] == "20"
    assert client.get_metric_history(run.info.run_id, "step_20/promote")[0].value == 0
    assert run.data.params["environment"] == "local"
    assert run.data.params["git_commit"] == COMMIT
    assert run.data.tags["decision"] == "rollback"
    assert run.data.tags["outcome"] == "pending"
    # Per-signal metrics with a step per second into the window, for MLflow's charts.
    history = client.get_metric_history(run.info.run_id, "error_ratio/canary")
    steps = sorted(m.step for m in history)
    assert len(steps) >= 60
    assert steps[0] == 0
    assert steps[-1] == WINDOW_S
    assert all(m.value == pytest.approx(0.2, abs=0.01) for m in history)
    latency = client.get_metric_history(run.info.run_id, "p95_latency_s/stable")
    assert latency
    assert all(0.1 < m.value <= 0.5 for m in latency)
    assert run.data.metrics["window/canary_requests"] == pytest.approx(2 * WINDOW_S, rel=0.05)
    assert run.data.metrics["limit/error_ratio"] == pytest.approx(0.02)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"report.md", "chart.svg", "analysis.json"}

    # The version links to the run: a short tag, and a Markdown link in its description.
    version = client.get_model_version(MODEL, "2")
    assert version.tags[tracking.EVIDENCE_TAG] == url
    assert version.description.startswith("Owner's notes.\n\n")
    assert version.description.endswith(f"Release evidence: [rollback, run "
                                        f"{run.info.run_id[:8]}]({url})")  # fmt: skip

    # `nexus release` writes the same files beside its log.
    saved = tracking.save_local(mlflow_server.url, MODEL, "2", tmp_path / "release-evid-2")
    assert saved is not None
    assert saved.report.read_text() == markdown
    assert saved.chart.read_text() == svg
    assert saved.report.name == "release-evid-2.md"

    # A retried step replaces its run; the description keeps one evidence line.
    _, _, again = _step(mlflow_server, window, analysis)
    assert again != url
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [
        again.rsplit("/", 1)[1]
    ]
    description = client.get_model_version(MODEL, "2").description
    assert description.count("Release evidence:") == 1
    assert again in description

    # The exit handler's outcome lands on the run.
    tracking.record_outcome(mlflow_server.url, MODEL, PIPELINE_RUN, "rolled_back")
    final = client.get_run(again.rsplit("/", 1)[1])
    assert final.data.tags["outcome"] == "rolled_back"


def test_evidence_without_prometheus_still_records_the_judgement(
    mlflow_server: Mlflow, window: Window, registered: Registry
) -> None:
    """The judgement was made; a Prometheus gone since then costs the chart, not the run."""
    dead = Window(f"http://127.0.0.1:{free_port()}", window.end)
    markdown, svg, url = _step(mlflow_server, dead, _judge(window))
    assert "> no chart data: Prometheus at http://127.0.0.1:" in markdown
    assert "| 5xx ratio | 0.200 | 0.000 |" in markdown
    assert "no samples" in svg
    assert url in MlflowClient(mlflow_server.url).get_model_version(MODEL, "2").description


def test_a_blocked_release_report_leads_with_the_gate_verdict(mlflow_server: Mlflow) -> None:
    """A candidate the quality gate blocked at 0 % never had a canary window: its report says
    why it was blocked, with the gate's figures, and not that nothing was compared."""
    model = "evid-blocked"
    registry = Registry.connect(mlflow_server.url)
    spec = c.ServingSpec(storage_uri="hf://acme/evid-blocked", runtime="vllm", gpu_pool="a100")
    for _ in range(2):
        registry.register(model, spec, load_pools(default_pools_file()))
    likelihood = ("likelihood: the reference completions' mean log-probability per token is "
                  "-9.120 under the candidate against -1.210 under the champion, a drop of "
                  "7.910 > 1.0 (quality.max_logprob_drop)")  # fmt: skip
    verdict = GateVerdict(
        False, (likelihood,),
        {"examples": 3.0, "candidate_logprob": -9.12, "champion_logprob": -1.21,
         "logprob_drop": 7.91},
        ({"id": "calm", "prompt": "the model answers", "delta": -7.91},),
    )  # fmt: skip
    now = time.time()
    stage = stage_analysis(verdict, f"{model}-predictor-00002", started=now - 3, now=now)
    summary = summarize([{"percent": 0, **json.loads(stage.to_json())}])
    markdown, svg, run = tracking.evidence_step(
        tracking_uri=mlflow_server.url,
        prometheus_url=f"http://127.0.0.1:{free_port()}",  # no window: nothing to query
        plan_json=dataclasses.replace(_plan(), model=model).to_json(),
        analysis_json=json.dumps(summary),
        thresholds=THRESHOLDS,
        run="nexus-release-blocked",
    )

    header, gate = markdown.split("\n## Quality gate at 0 %\n", 1)
    assert header.startswith(f"# Release of {model} version 2 to local: blocked\n")
    assert f"**blocked**: quality gate: {likelihood}" in header
    # Straight from the header to the verdict: no window line, no canary section.
    assert header.rstrip().endswith("| pipeline run | `nexus-release-blocked` |")
    assert "No canary window" not in markdown
    assert "## Canary against stable" not in markdown
    assert gate.lstrip().startswith("**blocked** (exit status 4, outcome `blocked`)")
    assert f"- {likelihood}" in gate
    assert "| logprob_drop | 7.91 |" in gate
    assert "| calm | the model answers | -7.91 |" in gate
    assert "blocked at 0 % by the quality gate" in svg
    assert "first release" not in svg
    params = MlflowClient(mlflow_server.url).get_run(run.run_id).data.params
    assert (params["canary_percent"], params["steps"]) == ("0", "0")


def test_compiled_canary_step_declares_markdown_and_html_artifacts() -> None:
    # The first document is the pipeline spec; kfp-kubernetes adds its platform spec after it.
    text = (REPO / "pipelines" / "compiled" / "release.yaml").read_text()
    spec = next(yaml.safe_load_all(text))
    outputs = spec["components"]["comp-canary"]["outputDefinitions"]["artifacts"]
    types = {name: o["artifactType"]["schemaTitle"] for name, o in outputs.items()}
    assert types == {"analysis": "system.Artifact", "report": "system.Markdown",
                     "chart": "system.HTML"}  # fmt: skip


def test_mlflow_run_page_lists_the_chart(
    mlflow_server: Mlflow, window: Window, registered: Registry, tmp_path: Path
) -> None:
    """What a model owner sees: the run's artifacts in MLflow's UI, in headless Chromium."""
    _, _, url = _step(mlflow_server, window, _judge(window))
    dom = ""
    for _ in range(3):  # React renders on its own clock; a slow machine may need a retry
        dom = chromium(f"{url}/artifacts", "--dump-dom", profile=tmp_path)
        if "chart.svg" in dom:
            break
    assert "chart.svg" in dom, dom[-2000:]
    assert "report.md" in dom
    shot = tmp_path / "mlflow-release-run.png"
    # The artifact view with the chart open: the screenshot in docs/screenshots/.
    chromium(f"{url}/artifacts/chart.svg", f"--screenshot={shot}", profile=tmp_path, timeout=240)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
