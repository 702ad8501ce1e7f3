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

# Series other components export that the monitoring may use, and why.
EXTERNAL_METRICS: Final[dict[str, str]] = {
    # Knative queue-proxy, port 9091 of every predictor pod: the only per-revision view,
    # which is what separates a canary from the stable revision.
    "revision_app_request_count": "Knative Serving queue-proxy request counter",
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
