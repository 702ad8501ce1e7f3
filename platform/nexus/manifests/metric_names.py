"""The metrics contract between the servers and the dashboards/alerts that read them.

The transformer and router export exactly these series; ``platform/k8s/monitoring`` may
query only these, vLLM's own ``vllm:*`` metrics, the recording rules it defines and the
few external series listed in ``EXTERNAL_METRICS``. ``tests/manifests/test_monitoring.py``
checks the queries against this list, and a live ``/metrics`` scrape can be checked
against it with ``exposed_series``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

MetricType = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    type: MetricType
    labels: tuple[str, ...]
    component: Literal["transformer", "router"]


GATEWAY_METRICS: Final[tuple[Metric, ...]] = (
    Metric("gateway_requests_total", "counter", ("method", "path", "status"), "transformer"),
    Metric("gateway_request_latency_seconds", "histogram", ("method", "path"), "transformer"),
    Metric("gateway_in_flight_requests", "gauge", (), "transformer"),
    Metric("gateway_upstream_requests_total", "counter", ("upstream", "status"), "transformer"),
    Metric("gateway_upstream_latency_seconds", "histogram", ("upstream",), "transformer"),
    Metric("gateway_rate_limited_total", "counter", ("reason",), "transformer"),
    Metric("gateway_circuit_open_total", "counter", ("upstream",), "transformer"),
    Metric("gateway_circuit_state", "gauge", ("upstream",), "transformer"),
    Metric("gateway_limiter_degraded", "gauge", (), "transformer"),
    Metric("gateway_tokens_total", "counter", ("kind",), "transformer"),
    Metric("gateway_time_to_first_token_seconds", "histogram", (), "transformer"),
    Metric("gateway_fallback_used_total", "counter", ("from_model", "to_model"), "router"),
)

GATEWAY_METRIC_NAMES: Final[frozenset[str]] = frozenset(m.name for m in GATEWAY_METRICS)

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

# Series other components export that the monitoring may use, and why.
EXTERNAL_METRICS: Final[dict[str, str]] = {
    f"{QUEUE_PROXY_DURATION}_{suffix}": "Knative Serving queue-proxy request duration"
    for suffix in ("bucket", "sum", "count")
}
# vLLM's metric names all start with this prefix (vllm:num_requests_running, ...).
VLLM_PREFIX: Final = "vllm:"


def exposed_series(metric: Metric) -> frozenset[str]:
    """Sample names ``prometheus_client`` exposes for a metric (histograms have three)."""
    if metric.type == "histogram":
        return frozenset(f"{metric.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return frozenset({metric.name})


def queryable_names() -> frozenset[str]:
    """Every series name a query may use, vLLM's prefix aside."""
    names: set[str] = set(EXTERNAL_METRICS)
    for metric in GATEWAY_METRICS:
        names |= exposed_series(metric)
    return frozenset(names)
