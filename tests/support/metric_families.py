"""The metric families each Nexus server registers, read back from the objects that register
them (``nexus.observability.families``): the metrics contract, never a second list."""

from __future__ import annotations

from nexus.observability import Family, TransformerMetrics, families, new_registry
from nexus.router.metrics import RouterMetrics


def transformer_families(*, tenant_label: bool = True) -> tuple[Family, ...]:
    return families(TransformerMetrics(new_registry(), tenant_label=tenant_label))


def router_families() -> tuple[Family, ...]:
    return families(RouterMetrics(new_registry(), steps=()))


def exported_series() -> frozenset[str]:
    """Every sample name a scrape of a transformer or a router can show (``_created`` aside)."""
    return frozenset(s for f in (*transformer_families(), *router_families()) for s in f.series)
