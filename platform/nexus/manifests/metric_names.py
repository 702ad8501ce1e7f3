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
# "kn.queueproxy.app.duration" and "kn.serving.invocation.duration":
OLD_QUEUE_PROXY_DURATION: Final = "kn_queueproxy_app_duration_seconds"
NEW_QUEUE_PROXY_DURATION: Final = "kn_serving_invocation_duration_seconds"


@dataclass(frozen=True, slots=True)
class QueueProxyDuration:
    """The queue-proxy's request histogram as one Knative Serving patch release exports it."""

    name: str
    # True where pkg/queue/request_metric.go records ``float64(latency / time.Second)``:
    # every request shorter than a second lands in the 0 s bucket, so a p95 of sub-second
    # answers reads 0 and a latency comparison between revisions says nothing.
    whole_seconds: bool


def _patches(
    minor: str, first: int, last: int, name: str, *, whole: bool
) -> dict[str, QueueProxyDuration]:
    return {f"{minor}.{patch}": QueueProxyDuration(name, whole) for patch in range(first, last + 1)}


# Per PATCH release, read in knative/serving's tags (pkg/queue/request_metric.go, the
# meter's histogram name and the ``elapsedTime :=`` line of each tag):
# - the rename "kn.queueproxy.app.duration" -> "kn.serving.invocation.duration" (#16293,
#   "fix metric names") is in knative-v1.21.0 and was backported to knative-v1.19.8 and
#   knative-v1.20.1; 1.19.0-1.19.7 and 1.20.0 keep the old name;
# - the sub-second fix (#16359, ``latency.Seconds()`` instead of
#   ``float64(latency / time.Second)``) is in knative-v1.19.9, knative-v1.20.2 and every
#   1.21 tag; earlier patches truncate durations to whole seconds, 1.19.8 and 1.20.1 too.
# A minor version alone cannot say which name a cluster exports.
QUEUE_PROXY_DURATION_BY_KNATIVE: Final[dict[str, QueueProxyDuration]] = {
    **_patches("1.19", 0, 7, OLD_QUEUE_PROXY_DURATION, whole=True),
    **_patches("1.19", 8, 8, NEW_QUEUE_PROXY_DURATION, whole=True),
    **_patches("1.19", 9, 9, NEW_QUEUE_PROXY_DURATION, whole=False),
    **_patches("1.20", 0, 0, OLD_QUEUE_PROXY_DURATION, whole=True),
    **_patches("1.20", 1, 1, NEW_QUEUE_PROXY_DURATION, whole=True),
    **_patches("1.20", 2, 3, NEW_QUEUE_PROXY_DURATION, whole=False),
    **_patches("1.21", 0, 3, NEW_QUEUE_PROXY_DURATION, whole=False),
}


def queue_proxy_duration(knative_serving: str) -> QueueProxyDuration:
    """The histogram of a Knative Serving release ("1.21.1"); ValueError for one not read."""
    found = QUEUE_PROXY_DURATION_BY_KNATIVE.get(knative_serving.removeprefix("knative-v"))
    if found is None:
        raise ValueError(
            f"no queue-proxy metric known for Knative Serving {knative_serving!r}; read "
            "pkg/queue/request_metric.go at its tag and add it to "
            "nexus.manifests.metric_names.QUEUE_PROXY_DURATION_BY_KNATIVE "
            f"(known: {', '.join(QUEUE_PROXY_DURATION_BY_KNATIVE)})"
        )
    return found


# The declared Knative (platform/versions.yaml, knative_serving: 1.21.1), exact seconds;
# tests/manifests/test_monitoring.py fails when the two drift apart.
QUEUE_PROXY_DURATION: Final = NEW_QUEUE_PROXY_DURATION
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
