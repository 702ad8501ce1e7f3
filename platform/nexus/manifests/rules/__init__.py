"""The linter's rules: checks KServe and Argo CD accept but that break Nexus in a cluster.

Each module exposes ``check(docs, ctx)`` returning findings for the documents being linted;
``RULES`` is the order ``nexus lint`` runs them in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding
from nexus.manifests.rules import (
    argocd,
    graph,
    inference_service,
    istio,
    knative,
    kustomize,
    model_cache,
    secrets,
    serving,
)

Rule = Callable[[Sequence[Document], LintContext], list[Finding]]

RULES: tuple[Rule, ...] = (
    inference_service.check,
    knative.check,
    serving.check,
    graph.check,
    argocd.check,
    model_cache.check,
    istio.check,
    secrets.check,
)

__all__ = ["RULES", "Rule", "kustomize"]
