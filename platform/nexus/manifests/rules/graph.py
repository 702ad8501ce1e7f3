"""InferenceGraph rules: a graph KServe accepts can still route nowhere or lose credentials.

The controller validates little of a graph: it does not require exactly one target per
step, Splitter weights summing to 100, or that a node named in ``nodeName`` exists. And
two Nexus facts matter: ``serviceName`` makes the router POST to ``/v1/models/<name>:predict``
(so OpenAI traffic needs ``serviceUrl``), and transformers authenticate, so the router
must propagate ``Authorization`` and ``X-Api-Key`` (KServe's ``router.headers.propagate``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding
from nexus.manifests.rules.inference_service import is_vllm

TARGETS = ("serviceName", "serviceUrl", "nodeName")
CREDENTIAL_HEADERS = ("Authorization", "X-Api-Key")
_COMPONENT_SUFFIX = re.compile(r"-(predictor|transformer|explainer)(-default)?$")

Step = tuple[str, int, Mapping[str, Any]]


def _nodes(doc: Document) -> Mapping[str, Any]:
    nodes = doc.spec.get("nodes")
    return nodes if isinstance(nodes, dict) else {}


def _steps(doc: Document) -> Iterator[Step]:
    for node_name, node in _nodes(doc).items():
        steps = node.get("steps") if isinstance(node, dict) else None
        for index, step in enumerate(steps or []):
            if isinstance(step, dict):
                yield str(node_name), index, step


def _where(node: str, index: int, field: str = "") -> str:
    return f"spec.nodes.{node}.steps[{index}]" + (f".{field}" if field else "")


def isvc_of_url(
    url: str, graph_namespace: str | None, namespaces: frozenset[str]
) -> tuple[str, str | None] | None:
    """(name, namespace) of the InferenceService a cluster-local URL addresses, else None.

    ``<name>[-component].<namespace>.svc[.cluster.local]`` always is; ``<name>`` and
    ``<name>.<namespace>`` only when that namespace is one the repository uses, so that
    ``example.com`` is not taken for service ``example`` in namespace ``com``.
    """
    host = urlsplit(url).hostname or ""
    labels = host.split(".")
    if host.endswith((".svc", ".svc.cluster.local")) or len(labels) == 1:
        local = True
    else:
        local = len(labels) == 2 and labels[1] in namespaces
    if not local or not labels[0]:
        return None
    namespace = labels[1] if len(labels) > 1 else graph_namespace
    return _COMPONENT_SUFFIX.sub("", labels[0]), namespace


def _structure(doc: Document) -> Iterator[Finding]:
    nodes = _nodes(doc)
    if "root" not in nodes:
        yield doc.finding(
            "spec.nodes",
            "graph-root",
            "the graph has no node named 'root'; the router starts there",
            "name the entry node `root`",
        )
    for node_name, index, step in _steps(doc):
        targets = [t for t in TARGETS if step.get(t)]
        if len(targets) != 1:
            yield doc.finding(
                _where(node_name, index),
                "graph-step-target",
                f"a step needs exactly one of {', '.join(TARGETS)}; found "
                f"{', '.join(targets) or 'none'}",
                "keep exactly one target on the step",
            )
        target = step.get("nodeName")
        if target and target not in nodes:
            yield doc.finding(
                _where(node_name, index, "nodeName"),
                "graph-dangling-node",
                f"nodeName {target!r} names no node of this graph",
                f"add node {target!r} or point the step at one of {sorted(nodes)}",
            )
    for node_name, node in nodes.items():
        if isinstance(node, dict) and node.get("routerType") == "Splitter":
            weights = [s.get("weight") for s in node.get("steps") or [] if isinstance(s, dict)]
            if (
                any(not isinstance(w, int) for w in weights)
                or sum(w for w in weights if isinstance(w, int)) != 100
            ):
                yield doc.finding(
                    f"spec.nodes.{node_name}.steps",
                    "graph-splitter-weights",
                    f"Splitter weights must all be set and sum to 100, got {weights}",
                    "give every step a weight; make them add up to 100",
                )
    yield from _cycles(doc, nodes)


def _cycles(doc: Document, nodes: Mapping[str, Any]) -> Iterator[Finding]:
    edges: dict[str, list[str]] = {str(name): [] for name in nodes}
    for node_name, _, step in _steps(doc):
        if step.get("nodeName") in nodes:
            edges[node_name].append(str(step["nodeName"]))
    reported: set[frozenset[str]] = set()

    def visit(name: str, trail: list[str]) -> Iterator[list[str]]:
        if name in trail:
            yield [*trail[trail.index(name) :], name]
            return
        for nxt in edges.get(name, []):
            yield from visit(nxt, [*trail, name])

    for start in sorted(edges):
        for cycle in visit(start, []):
            key = frozenset(cycle)
            if key not in reported:
                reported.add(key)
                yield doc.finding(
                    f"spec.nodes.{cycle[0]}",
                    "graph-cycle",
                    f"nodes form a cycle: {' -> '.join(cycle)}; the router would recurse forever",
                    "break the cycle; a fallback is a Sequence step, not a loop back",
                )


def _serves_openai(isvc: Document) -> bool:
    predictor = isvc.spec.get("predictor")
    return "transformer" in isvc.spec or (isinstance(predictor, dict) and is_vllm(predictor))


def _propagated(ctx: LintContext) -> list[str]:
    router = ctx.kserve_config("router") or {}
    headers = router.get("headers") or {}
    patterns = headers.get("propagate") if isinstance(headers, dict) else None
    return [str(p) for p in patterns] if isinstance(patterns, list) else []


def _header_covered(header: str, patterns: Sequence[str]) -> bool:
    # The router matches Go regexps against canonical header names (unanchored).
    for pattern in patterns:
        try:
            if re.search(pattern, header):
                return True
        except re.error:
            continue
    return False


def _targets(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    patterns = _propagated(ctx)
    missing = [h for h in CREDENTIAL_HEADERS if not _header_covered(h, patterns)]
    header_reported = False
    for node_name, index, step in _steps(doc):
        isvc: Document | None = None
        if step.get("serviceName"):
            name = str(step["serviceName"])
            isvc = ctx.find_inference_service(name, doc.namespace)
            if isvc is None:
                yield doc.finding(
                    _where(node_name, index, "serviceName"),
                    "graph-unknown-service",
                    f"serviceName {name!r} is not an InferenceService defined in this repository",
                    "add its manifest under inference_services/ or fix the name",
                )
            elif _serves_openai(isvc):
                yield doc.finding(
                    _where(node_name, index, "serviceName"),
                    "graph-openai-needs-url",
                    f"{name!r} serves the OpenAI API, but serviceName makes the router POST "
                    f"to /v1/models/{name}:predict",
                    f"use serviceUrl: http://{name}.{isvc.namespace or doc.namespace or '<ns>'}"
                    ".svc.cluster.local/<OpenAI route>, e.g. /openai/v1/chat/completions",
                )
        elif step.get("serviceUrl"):
            url = str(step["serviceUrl"])
            ref = isvc_of_url(url, doc.namespace, ctx.namespaces())
            component = _COMPONENT_SUFFIX.search((urlsplit(url).hostname or "").split(".")[0])
            if ref is not None and component is not None and component.group(1) != "transformer":
                yield doc.finding(
                    _where(node_name, index, "serviceUrl"),
                    "graph-predictor-host",
                    f"serviceUrl {url!r} addresses the {component.group(1)} of {ref[0]!r} "
                    "directly, skipping its transformer (authentication, limits, metrics)",
                    f"address the InferenceService host: http://{ref[0]}."
                    f"{ref[1] or '<namespace>'}.svc.cluster.local/<OpenAI route>",
                )
            if ref is not None:
                isvc = ctx.find_inference_service(*ref)
                if isvc is None:
                    yield doc.finding(
                        _where(node_name, index, "serviceUrl"),
                        "graph-unknown-service",
                        f"serviceUrl {url!r} addresses InferenceService {ref[0]!r} in namespace "
                        f"{ref[1]!r}, which this repository does not define",
                        "add its manifest under inference_services/ or fix the host",
                    )
        if isvc is not None and "transformer" in isvc.spec and missing and not header_reported:
            header_reported = True
            yield doc.finding(
                _where(node_name, index),
                "graph-propagate-credentials",
                f"step reaches the transformer of {isvc.name!r}, which authenticates, but the "
                f"router does not propagate {', '.join(missing)} (propagate: {patterns})",
                "add them to router.headers.propagate in kserve/inferenceservice-config "
                "(platform/k8s/cluster/inferenceservice-config.configmap.yaml)",
            )


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        if doc.kind == "InferenceGraph":
            findings.extend(_structure(doc))
            findings.extend(_targets(doc, ctx))
    return findings
