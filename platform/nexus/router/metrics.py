"""Router metrics (a Nexus extension; KServe's router exports none).

Metrics live in a ``CollectorRegistry`` that ``main()`` creates and passes in, so tests and
several routers in one process never share counters. Per-step children are bound once at
start-up: ``.labels()`` on the request path costs a lock and a dict lookup per call.

``nexus_router_fallbacks_total{from_model,to_model}`` counts Sequence steps whose condition
matched the failure body of the step before them, i.e. the fallback graphs in ``graphs/``
actually falling back. Model labels are step names (the graphs name steps after models).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from nexus.observability import LATENCY_BUCKETS


class RouterMetrics:
    """Every metric the router exports, registered in the registry it is given."""

    def __init__(self, registry: CollectorRegistry, *, steps: Iterable[str]) -> None:
        self.registry = registry
        self.requests = Counter(
            "nexus_router_requests",
            "Graph requests answered by the router, by HTTP status.",
            ["code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "nexus_router_request_duration_seconds",
            "Time from request to the start of the answer (first byte for streams).",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.step_seconds = Histogram(
            "nexus_router_step_duration_seconds",
            "Step call latency until the step's response headers (whole body when buffered).",
            ["step"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.step_responses = Counter(
            "nexus_router_step_responses",
            "Step call outcomes: the step's HTTP status, or 'error' for transport failures.",
            ["step", "code"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "nexus_router_fallbacks",
            "Sequence steps taken because the previous step answered an upstream failure.",
            ["from_model", "to_model"],
            registry=registry,
        )
        self.continuations = Counter(
            "nexus_router_stream_continuations",
            "Broken streams continued by a later step (continuation.py), by graph and step.",
            ["graph", "step"],
            registry=registry,
        )
        self._step_seconds = {step: self.step_seconds.labels(step) for step in steps}
        # Children by (step, status) and by status, bound on first use: a status is an
        # int on the hot path, so the cache is keyed by it and str() runs once per code.
        self._step_codes: dict[tuple[str, int | str], Any] = {}
        self._request_codes: dict[int, Any] = {}

    def observe_step(self, step: str, code: int | str, seconds: float) -> None:
        child = self._step_seconds.get(step)
        if child is None:
            child = self._step_seconds[step] = self.step_seconds.labels(step)
        child.observe(seconds)
        key = (step, code)
        counter = self._step_codes.get(key)
        if counter is None:
            counter = self._step_codes[key] = self.step_responses.labels(step, str(code))
        counter.inc()

    def observe_request(self, code: int, seconds: float) -> None:
        self.count_request(code)
        self.request_seconds.observe(seconds)

    def count_request(self, code: int) -> None:
        """Count a request whose duration was observed already (a stream, at its head)."""
        counter = self._request_codes.get(code)
        if counter is None:
            counter = self._request_codes[code] = self.requests.labels(str(code))
        counter.inc()

    def fallback(self, from_model: str, to_model: str) -> None:
        self.fallbacks.labels(from_model, to_model).inc()

    def continued(self, graph: str, step: str) -> None:
        self.continuations.labels(graph, step).inc()


def now() -> float:
    return time.perf_counter()
