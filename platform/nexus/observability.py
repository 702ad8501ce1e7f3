"""Metrics and JSON logging shared by every Nexus server.

Metric names are a contract with dashboards and alerts (``platform/k8s/monitoring/``).
The families registered here (and the router's, ``nexus.router.metrics``) are that
contract: ``families`` reads them back from the objects that register them, and
``tests/manifests/test_monitoring.py`` and ``docs/metrics.md`` are checked against it.
Label sets are bounded: paths are route templates, never raw URLs, and principals appear
only as a tenant label when ``GATEWAY_METRICS_TENANT_LABEL`` is set.

With several worker processes, metrics go through prometheus_client's multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``) so that one scrape sees every worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

# One set for every latency histogram of both servers (transformer and router), so their
# quantiles line up in one dashboard panel: 0.5 ms resolves the proxies' own overhead,
# 120 s covers a long non-streamed completion.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                   10, 30, 60, 120)  # fmt: skip
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class Family:
    """One registered metric family as a query sees it (a counter's name ends in ``_total``)."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str

    @property
    def series(self) -> tuple[str, ...]:
        """The sample names PromQL can read (a histogram has three)."""
        if self.type == "histogram":
            return tuple(f"{self.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        return (self.name,)


def families(metrics: object) -> tuple[Family, ...]:
    """The families an object such as ``TransformerMetrics`` registered, in registration order."""
    found = []
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for described in value.describe():
                suffix = "_total" if described.type == "counter" else ""
                # prometheus_client keeps label names only in this attribute (0.26).
                labels = tuple(value._labelnames)
                found.append(
                    Family(described.name + suffix, described.type, labels, described.documentation)
                )
    return tuple(found)


class TransformerMetrics:
    """The transformer's metric families, registered on a registry built by the caller."""

    def __init__(self, registry: CollectorRegistry, *, tenant_label: bool = False) -> None:
        self.registry = registry
        tenant = ("tenant",) if tenant_label else ()
        self.tenant_label = tenant_label
        self.requests = Counter(
            "nexus_transformer_requests_total",
            "Requests answered, by route template and status.",
            ("method", "path", "status", *tenant),
            registry=registry,
        )
        self.latency = Histogram(
            "nexus_transformer_request_duration_seconds",
            "Time from request to the last byte of the answer.",
            ("method", "path"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "nexus_transformer_in_flight_requests",
            "Requests being served.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.upstream_requests = Counter(
            "nexus_transformer_upstream_requests_total",
            "Calls to the predictor, by upstream and status (or error kind).",
            ("upstream", "status"),
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "nexus_transformer_upstream_duration_seconds",
            "Time from sending to the predictor to its response headers.",
            ("upstream",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rate_limited = Counter(
            "nexus_transformer_rate_limited_total",
            "Requests refused by a rate limit, by exhausted budget.",
            ("reason", *tenant),
            registry=registry,
        )
        self.circuit_open = Counter(
            "nexus_transformer_circuit_open_total",
            "Times a circuit breaker opened.",
            ("upstream",),
            registry=registry,
        )
        self.circuit_state = Gauge(
            "nexus_transformer_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("upstream",),
            registry=registry,
            multiprocess_mode="max",
        )
        self.limiter_degraded = Gauge(
            "nexus_transformer_limiter_degraded",
            "1 while Redis is unreachable and limits are per replica (or refused).",
            registry=registry,
            multiprocess_mode="max",
        )
        self.limiter_degraded_requests = Counter(
            "nexus_transformer_limiter_degraded_requests_total",
            "Requests admitted by the per-replica limiter while Redis was unreachable.",
            registry=registry,
        )
        self.tokens = Counter(
            "nexus_transformer_tokens_total",
            "Tokens reported by the predictor's usage, by kind.",
            ("kind", *tenant),
            registry=registry,
        )
        self.ttft = Histogram(
            "nexus_transformer_time_to_first_token_seconds",
            "Time from request to the first streamed chunk of a completion.",
            buckets=TTFT_BUCKETS,
            registry=registry,
        )

        # Label lookups take a lock and hash the values; requests repeat a handful of
        # label sets, so their children are looked up once and kept.
        self._request_children: dict[tuple[str, ...], Any] = {}
        self._latency_children: dict[tuple[str, str], Any] = {}
        self._token_children: dict[tuple[str, ...], Any] = {}

    def observe_request(self, labels: tuple[str, ...], seconds: float) -> None:
        """Count one answered request; ``labels`` = method, path, status[, tenant]."""
        counter = self._request_children.get(labels)
        if counter is None:
            counter = self._request_children[labels] = self.requests.labels(*labels)
        counter.inc()
        key = (labels[0], labels[1])
        histogram = self._latency_children.get(key)
        if histogram is None:
            histogram = self._latency_children[key] = self.latency.labels(*key)
        histogram.observe(seconds)

    def count_tokens(self, prompt: int, completion: int, tenant: tuple[str, ...] = ()) -> None:
        for kind, amount in (("prompt", prompt), ("completion", completion)):
            key = (kind, *tenant)
            counter = self._token_children.get(key)
            if counter is None:
                counter = self._token_children[key] = self.tokens.labels(*key)
            counter.inc(amount)

    # LimiterEvents
    def degraded(self, active: bool) -> None:
        self.limiter_degraded.set(1 if active else 0)

    def served_degraded(self) -> None:
        self.limiter_degraded_requests.inc()


def new_registry() -> CollectorRegistry:
    """A registry for one server; in multiprocess mode values live in shared files."""
    return CollectorRegistry(auto_describe=True)


def exposition(registry: CollectorRegistry) -> bytes:
    """The text a scrape of ``/metrics`` gets: our families plus the libraries' defaults."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
    return generate_latest(registry) + generate_latest(REGISTRY)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; request fields come from ``extra={"fields": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class AccessLog:
    """One JSON line per request, written in batches: at most one write per loop tick.

    ``logging`` flushes its stream after every record, a system call per request that
    costs as much as a tenth of a transformer hop. Lines queued during one event-loop tick go
    out together at its end, so nothing waits for a timer and nothing is lost but what a
    crash interrupts mid-tick. The line has the same shape as ``JsonFormatter``'s.
    """

    def __init__(self, name: str, *, stream: Any = None) -> None:
        self._name = name
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._lines: list[bytes] = []
        self._scheduled = False
        self._second = -1
        self._stamp = ""

    def write(
        self, fields: dict[str, Any], *, message: str = "request", level: str = "info"
    ) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # formatting the date costs more than the rest of the line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "timestamp": f"{self._stamp}.{int(now % 1 * 1000):03d}Z",
            "level": level,
            "logger": self._name,
            "message": message,
            **fields,
        }
        self._lines.append(orjson.dumps(entry, default=str) + b"\n")
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._lines:
            data, self._lines = b"".join(self._lines), []
            self._stream.write(data)
            self._stream.flush()


def configure_json_logging(level: str = "INFO") -> None:
    """Route every logger (ours, uvicorn's, KServe's) to JSON lines on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library warnings (e.g. KServe using a deprecated FastAPI class) become JSON lines too.
    logging.captureWarnings(True)
    for name in ("uvicorn", "uvicorn.error", "kserve", "kserve.trace"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # uvicorn's access log would duplicate our request line.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
