"""What each server's /metrics exposes: one set of latency buckets, and no dead families."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from nexus.observability import TransformerMetrics, families
from nexus.router.metrics import RouterMetrics


def _buckets(text: str, family: str) -> list[str]:
    return [
        line.split('le="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith(f"{family}_bucket{{")
    ]


def test_both_servers_share_one_set_of_latency_buckets() -> None:
    transformer, router = CollectorRegistry(), CollectorRegistry()
    TransformerMetrics(transformer).latency.labels("POST", "/v1/chat/completions").observe(0.01)
    RouterMetrics(router, steps=["primary"]).request_seconds.observe(0.01)
    transformer_le = _buckets(
        generate_latest(transformer).decode(), "nexus_transformer_request_duration_seconds"
    )
    router_le = _buckets(generate_latest(router).decode(), "nexus_router_request_duration_seconds")
    assert transformer_le == router_le
    assert transformer_le[0] == "0.0005"
    assert "120.0" in router_le  # a long non-streamed completion still lands in a bucket


def test_fallbacks_are_counted_by_the_router_only() -> None:
    # The transformer never serves a fallback (the graph's Sequence does): no such family.
    text = generate_latest(TransformerMetrics(CollectorRegistry()).registry).decode()
    assert "nexus_router_fallbacks" not in text
    names = {f.name for f in families(TransformerMetrics(CollectorRegistry()))}
    assert "nexus_router_fallbacks_total" not in names
    router = generate_latest(RouterMetrics(CollectorRegistry(), steps=["a"]).registry).decode()
    assert "# TYPE nexus_router_fallbacks_total counter" in router
