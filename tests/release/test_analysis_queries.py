"""The canary analysis's PromQL on series shaped as a cluster's Prometheus holds them.

``promtool test rules`` evaluates the queries of ``nexus.release.analyze.queries`` with
Prometheus's own engine over input series labelled the way the PodMonitors of
``platform/k8s/monitoring`` label them: Knative 1.21's queue-proxy histogram
(``kn_serving_invocation_duration_seconds`` by ``http_response_status_code``, OTel scope
label included) and vLLM on predictor pods (``isvc``, ``revision`` from the pod's labels), and the transformer, whose single
revision must not count for either predictor revision. The local path is covered end to
end by ``test_lifecycle.py``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from nexus.manifests.metric_names import QUEUE_PROXY_DURATION
from nexus.release.analyze import queries

CANARY, STABLE = "llama-8b-predictor-00002", "llama-8b-predictor-00001"


def queue_proxy(revision: str, code: str, per_minute: int) -> dict[str, str]:
    """One status code's request count in the queue-proxy histogram of ``revision``."""
    labels = (
        f'namespace="nexus", isvc="llama-8b", revision="{revision}", '
        f'pod="{revision}-deployment-7d9f", container="queue-proxy", '
        f'otel_scope_name="knative.dev/serving/pkg/queue", http_response_status_code="{code}"'
    )
    return {"series": f"{QUEUE_PROXY_DURATION}_count{{{labels}}}", "values": f"0+{per_minute}x30"}


def histogram(name: str, revision: str, bounds: list[str], counts: list[int]) -> list[Any]:
    """Cumulative buckets growing by ``counts`` (per bucket, not cumulative) each minute."""
    series, total = [], 0
    for le, count in zip(bounds, counts, strict=True):
        total += count
        labels = f'namespace="nexus", isvc="llama-8b", revision="{revision}", le="{le}"'
        series.append({"series": f"{name}_bucket{{{labels}}}", "values": f"0+{total}x30"})
    return series


def test_the_analysis_queries_separate_predictor_revisions(tmp_path: Path) -> None:
    assert shutil.which("promtool"), "promtool missing: `make system-deps` installs prometheus"
    latency = QUEUE_PROXY_DURATION
    ttft = "vllm:time_to_first_token_seconds"
    transformer = (
        'nexus_transformer_requests_total{namespace="nexus", isvc="llama-8b", '
        'revision="llama-8b-transformer-00001", status="200"}'
    )
    series = [
        queue_proxy(CANARY, "200", 8),
        queue_proxy(CANARY, "503", 2),
        queue_proxy(STABLE, "200", 90),
        # The transformer's own counter: one revision for both predictor revisions.
        {"series": transformer, "values": "0+1000x30"},
        # Canary answers in (1, 2.5] s, stable in (0.25, 0.5] s (Knative's bounds).
        *histogram(latency, CANARY, ["1", "2.5", "+Inf"], [0, 10, 0]),
        *histogram(latency, STABLE, ["0.25", "0.5", "+Inf"], [0, 90, 0]),
        *histogram(ttft, CANARY, ["0.1", "0.2", "+Inf"], [0, 10, 0]),
        *histogram(ttft, STABLE, ["0.1", "0.2", "+Inf"], [90, 0, 0]),
    ]
    exprs = queries("llama-8b", [CANARY, STABLE], 600)
    expected = {
        "requests": {CANARY: 100.0, STABLE: 900.0},
        "errors": {CANARY: 20.0},
        "p95_latency_s": {CANARY: 2.425, STABLE: 0.4875},
        "p95_ttft_s": {CANARY: 0.195, STABLE: 0.095},
    }
    tests = [
        {
            "expr": f"round({exprs[measure]}, 0.0001)",
            "eval_time": "20m",
            "exp_samples": [
                {"labels": f'{{revision="{revision}"}}', "value": value}
                for revision, value in values.items()
            ],
        }
        for measure, values in expected.items()
    ]
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    (tmp_path / "analysis.test.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    result = subprocess.run(["promtool", "test", "rules", "analysis.test.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_ttft_series_is_chosen_by_the_runtime() -> None:
    vllm = queries("llama-8b", [CANARY, STABLE], 600, runtime="vllm")
    assert "vllm:time_to_first_token_seconds_bucket" in vllm["p95_ttft_s"]
    # KServe's Hugging Face server exports no TTFT histogram: the queue-proxy's alone judges.
    assert sorted(queries("llama-8b", [CANARY, STABLE], 600, runtime="huggingface")) == [
        "errors", "p95_latency_s", "requests",
    ]  # fmt: skip
