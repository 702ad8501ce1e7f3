"""Istio authorization rules: an ALLOW policy must not lock out a scraper without a sidecar.

- ``authz-metrics-mtls``: an ``AuthorizationPolicy`` rule that admits only ``/metrics`` but
  names its callers by ``source.namespaces`` or ``source.principals``. Both match the
  authenticated peer of an mTLS connection only (istio/istio 1.27.1
  ``pilot/pkg/security/authz/model/generator.go``: ``srcNamespaceGenerator.principal`` and
  ``srcPrincipalGenerator.principal`` build matchers on the peer certificate's principal),
  and the Prometheus Nexus installs has no sidecar (``platform/prerequisites.yaml``): its
  scrapes get 403, the canary analysis loses its series and every release rolls back. A
  rule without ``from`` matches any source (``model.go``, ``generatePrincipal``:
  ``principalAny``); NetworkPolicies limit who reaches the port.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding

METRICS_PATH = "/metrics"
PEER_FIELDS = ("namespaces", "principals")


def _metrics_only(rule: Mapping[str, Any]) -> bool:
    """Every operation of the rule's ``to`` is limited to the metrics path."""
    targets = rule.get("to")
    if not isinstance(targets, list) or not targets:
        return False
    for target in targets:
        operation = target.get("operation") if isinstance(target, dict) else None
        paths = operation.get("paths") if isinstance(operation, dict) else None
        if not isinstance(paths, list) or not paths or set(paths) != {METRICS_PATH}:
            return False
    return True


def _peer_sources(rule: Mapping[str, Any]) -> Iterator[tuple[int, str]]:
    sources = rule.get("from")
    for index, entry in enumerate(sources if isinstance(sources, list) else []):
        source = entry.get("source") if isinstance(entry, dict) else None
        for field in PEER_FIELDS:
            if isinstance(source, dict) and source.get(field):
                yield index, field


def _check(doc: Document) -> Iterator[Finding]:
    if str(doc.spec.get("action") or "ALLOW") != "ALLOW":
        return
    rules: Any = doc.spec.get("rules")
    for number, rule in enumerate(rules if isinstance(rules, list) else []):
        if not isinstance(rule, dict) or not _metrics_only(rule):
            continue
        for index, field in _peer_sources(rule):
            yield doc.finding(
                f"spec.rules[{number}].from[{index}].source.{field}",
                "authz-metrics-mtls",
                f"source.{field} matches only mTLS peers (Istio srcNamespaceGenerator / "
                "srcPrincipalGenerator: the peer certificate's principal), so a Prometheus "
                "without an Istio sidecar gets 403 on /metrics and the canary analysis "
                "loses its series",
                "drop `from` from the metrics rule and limit it by `to.operation.ports` and "
                "`paths: [/metrics]`; keep the namespace limit in a NetworkPolicy",
            )


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    del ctx  # per document
    findings: list[Finding] = []
    for doc in docs:
        if doc.kind == "AuthorizationPolicy" and doc.group == "security.istio.io":
            findings.extend(_check(doc))
    return findings
