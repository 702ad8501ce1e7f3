"""vLLM's Prometheus series, kept by the CPU worker so vLLM dashboards and alerts read it.

Names, types and the ``model_name`` label follow vLLM's ``/metrics`` (``vllm:`` prefix;
counters gain ``_total`` on exposition, as ``prometheus_client`` does for vLLM). Only the
series with a meaning on a fake engine are kept: queue and running gauges, token counters,
request latency histograms and finished requests by reason; cache and GPU gauges are not.

They are made through ``bentoml.metrics`` so BentoML's own ``/metrics`` route exposes them
next to its ``bentoml_*`` series. BentoML collects in Prometheus multiprocess mode, so the
gauges say how to add up across worker processes (``livesum``).
"""

from __future__ import annotations

import time
from typing import Any

import bentoml

from llm_text import Completion

LABELS = ["model_name"]
# vLLM's own bucket bounds for these histograms (seconds).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0)  # fmt: skip
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                   50.0, 60.0)  # fmt: skip
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class VllmMetrics:
    """The series of one served model; made once per process (registration is global)."""

    def __init__(self, model: str) -> None:
        def gauge(name: str, doc: str) -> Any:
            g = bentoml.metrics.Gauge(name, doc, LABELS, multiprocess_mode="livesum")
            return g.labels(model_name=model)

        def counter(name: str, doc: str) -> Any:
            return bentoml.metrics.Counter(name, doc, LABELS).labels(model_name=model)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Any:
            h = bentoml.metrics.Histogram(name, doc, LABELS, buckets=buckets)
            return h.labels(model_name=model)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution.")
        self.waiting = gauge(
            "vllm:num_requests_waiting", "Number of requests waiting to be processed."
        )
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter(
            "vllm:generation_tokens", "Number of generation tokens processed."
        )
        self._success = bentoml.metrics.Counter(
            "vllm:request_success", "Count of successfully processed requests.",
            [*LABELS, "finished_reason"],
        )  # fmt: skip
        self._model = model
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Time to first token in seconds.", TTFT_BUCKETS
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "E2e request latency in seconds.", LATENCY_BUCKETS
        )
        self.request_prompt = histogram(
            "vllm:request_prompt_tokens", "Prefill tokens per request.", TOKEN_BUCKETS
        )
        self.request_generation = histogram(
            "vllm:request_generation_tokens", "Generation tokens per request.", TOKEN_BUCKETS
        )

    def finished(self, c: Completion, *, started: float, first_token: float) -> None:
        """Account one request that ran to its end (every answer stops at ``max_tokens``)."""
        usage = c.usage
        self.prompt_tokens.inc(usage["prompt_tokens"])
        self.generation_tokens.inc(usage["completion_tokens"])
        self.request_prompt.observe(usage["prompt_tokens"])
        self.request_generation.observe(usage["completion_tokens"])
        self.ttft.observe(first_token - started)
        self.e2e.observe(time.monotonic() - started)
        self._success.labels(model_name=self._model, finished_reason="length").inc()
