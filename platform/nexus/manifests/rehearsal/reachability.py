"""Reachability: every path the platform needs is open through its policies.

The matrix of who must reach whom:
- the Istio ingress gateway (istio-system, ``istio: ingressgateway``, identity
  ``istio-ingressgateway-service-account``: Istio's ``manifests/charts/gateways/
  istio-ingress``), which also serves Knative's ``knative-local-gateway`` under net-istio,
  and Knative's activator (knative-serving, ``app: activator``, ServiceAccount
  ``activator``: knative-v1.21.1 ``config/core/deployments/activator.yaml``), which proxies
  a revision while it scales from zero, deliver every request to every Knative pod
  (routers, transformers, predictors) on the queue port 8012; except that a caller with a
  sidecar reaches a cluster-local Knative host through net-istio's ``mesh`` VirtualService,
  straight to the revision or the activator (net-istio knative-v1.21.1
  ``pkg/reconciler/ingress/resources/virtual_service.go`` ``MakeMeshVirtualService``), so
  the gateway hop is needed by a non-router pod only when some in-tree caller of it has no
  sidecar or none calls it;
- graph routers call the transformers of the InferenceServices their steps name (or the
  predictors when there is no transformer); transformers call their own predictor;
- each Prometheus of the prerequisites scrapes every port of every pod its PodMonitors
  select (``GET`` on the endpoint's path);
- pipeline steps call the Services of the compiled pipeline's URLs (MLflow, Prometheus);
- the release pipeline's quality gate calls the predictor of every InferenceService at its
  own cluster-local Knative hosts (``latest-``/``prev-<isvc>-predictor``, and
  ``<judge>-predictor`` for a judge: ``nexus.release.gate_stage`` ``endpoints``,
  ``judge_endpoint``), past the transformer: ``POST`` completions and chat completions,
  ``GET`` models under the runtime's OpenAI prefix (``model.PREDICTOR_PATH_PREFIX``). A
  step with a sidecar reaches the revision itself; one without reaches it only through
  the gateway (as above), so the gateway carries the step's requests.

Each path is checked against the tree's NetworkPolicies and AuthorizationPolicies
(``policies``), then again with each opt-in Component's policies added, as an overlay
that includes the component would apply them, and with the namespaces the component
requires sidecars in (``tree.SIDECARS_ANNOTATION``) injected: an AuthorizationPolicy is
enforced only by the selected pod's sidecar (``policies.authorization_refusers``), so a
component policy over a namespace without sidecars would pass unexamined, and is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Final
from urllib.parse import urlsplit

from nexus.edge.wire import CHAT_COMPLETIONS, COMPLETIONS, MODELS
from nexus.manifests.model import PREDICTOR_PATH_PREFIX, runtime_of
from nexus.manifests.rehearsal.pods import QUEUE_PORT, Pod, pipeline_urls, selects
from nexus.manifests.rehearsal.policies import (
    ROOT_NAMESPACE,
    Peer,
    Request,
    authorization_refusers,
    network_refusers,
)
from nexus.manifests.rehearsal.tree import SIDECARS_ANNOTATION, Obj, Problem, Tree

RULE: Final = "rehearsal-reachability"
SERVE: Final = Request(QUEUE_PORT, "POST", "/v1/chat/completions")
SIDECAR_ANNOTATION: Final = "sidecar.istio.io/inject"
# What the quality gate and its judge ask a predictor (``edge.wire``), under the OpenAI
# base URL ``<prefix>/v1``.
GATE_CALLS: Final = (
    ("POST", f"/v1{COMPLETIONS}"),
    ("POST", f"/v1{CHAT_COMPLETIONS}"),
    ("GET", f"/v1{MODELS}"),
)


@dataclass(frozen=True, slots=True)
class Path:
    source: Peer
    target: Peer
    request: Request
    why: str
    owner: Obj  # the object that needs the path (named when no policy is to blame)
    # The caller without a sidecar whose request ``source`` (the gateway) carries.
    caller: Peer | None = None


def pod_peer(tree: Tree, pod: Pod) -> Peer:
    annotations = (pod.spec.get("metadata") or {}).get("annotations") or {}
    sidecar = (
        tree.sidecar_namespace(pod.namespace) and annotations.get(SIDECAR_ANNOTATION) != "false"
    )
    return Peer(pod.describe, pod.namespace, pod.labels, pod.service_account, sidecar, pod.ports)


def _data_plane(tree: Tree) -> tuple[Peer, Peer]:
    gateway = Peer(
        "the Istio ingress gateway",
        "istio-system",
        {"istio": "ingressgateway", "app": "istio-ingressgateway"},
        "istio-ingressgateway-service-account",
        True,
        {},
    )
    activator = Peer(
        "Knative's activator",
        "knative-serving",
        {"app": "activator", "role": "activator"},
        "activator",
        tree.sidecar_namespace("knative-serving"),
        {},
    )
    return gateway, activator


def _call_paths(tree: Tree, pods: Sequence[Pod]) -> list[Path]:
    """Routers to the first component of each InferenceService they name; transformers
    to their predictor; the quality gate to every predictor."""
    paths: list[Path] = []
    by_isvc: dict[tuple[str, str], dict[str, Pod]] = {}
    for pod in pods:
        if pod.owner.kind == "InferenceService":
            by_isvc.setdefault((pod.namespace, pod.owner.name), {})[pod.role] = pod
    for router in (p for p in pods if p.role == "router"):
        hosts = {urlsplit(str(url)).hostname or "" for url in _service_urls(router.owner)}
        for (namespace, name), components in by_isvc.items():
            if not any(h == name or h.startswith(f"{name}.{namespace}.") for h in hosts):
                continue
            first = components.get("transformer") or components.get("predictor")
            if first is not None:
                why = f"{router.owner.ref} routes to {name}"
                target = pod_peer(tree, first)
                paths.append(Path(pod_peer(tree, router), target, SERVE, why, router.owner))
    for components in by_isvc.values():
        if "transformer" in components and "predictor" in components:
            transformer, predictor = components["transformer"], components["predictor"]
            why = "the transformer forwards to its predictor"
            source, target = pod_peer(tree, transformer), pod_peer(tree, predictor)
            paths.append(Path(source, target, SERVE, why, transformer.owner))
    return [*paths, *_gate_paths(tree, pods)]


def _gate_paths(tree: Tree, pods: Sequence[Pod]) -> Iterator[Path]:
    """The release pipeline's quality gate to every predictor (see the module docstring)."""
    gateway, _ = _data_plane(tree)
    for step in [p for p in pods if p.role.startswith("pipeline step")][:1]:
        source = pod_peer(tree, step)
        for pod in (p for p in pods if p.role == "predictor"):
            prefix = PREDICTOR_PATH_PREFIX[runtime_of(pod.owner.data)]
            for method, path in GATE_CALLS:
                request = Request(QUEUE_PORT, method, prefix + path)
                why = f"the release pipeline's quality gate: {method} {request.path}"
                if not source.sidecar:
                    why += f" from {source.name}, which has no sidecar"
                hop, caller = (source, None) if source.sidecar else (gateway, source)
                yield Path(hop, pod_peer(tree, pod), request, why, step.owner, caller)


def _serving_paths(tree: Tree, pods: Sequence[Pod]) -> Iterator[Path]:
    gateway, activator = _data_plane(tree)
    calls = _call_paths(tree, pods)
    for pod in pods:
        if not pod.knative:
            continue
        target = pod_peer(tree, pod)
        callers = [c.source for c in calls if c.target.name == target.name]
        meshed = pod.role != "router" and callers and all(c.sidecar for c in callers)
        for hop in (activator,) if meshed else (gateway, activator):
            yield Path(
                hop, target, SERVE, f"Knative delivers requests through {hop.name}", pod.owner
            )
    yield from calls


def _service_urls(graph: Obj) -> Iterator[str]:
    for node in (graph.spec.get("nodes") or {}).values():
        for step in (node or {}).get("steps") or []:
            if isinstance(step, dict) and step.get("serviceUrl"):
                yield str(step["serviceUrl"])


def _prometheus_paths(tree: Tree, pods: Sequence[Pod]) -> Iterator[Path]:
    for service in tree.prerequisites.of_role("prometheus"):
        source = Peer(
            f"Prometheus {service.namespace}/{service.name}",
            service.namespace,
            service.pod_labels,
            None,
            service.sidecar,
            {},
        )
        for monitor in tree.of_kind("PodMonitor"):
            if not all(monitor.labels.get(k) == v for k, v in service.selects.items()):
                continue
            names = (monitor.spec.get("namespaceSelector") or {}).get("matchNames") or [
                monitor.namespace
            ]
            for pod in pods:
                if pod.namespace not in names or not selects(
                    monitor.spec.get("selector"), pod.labels
                ):
                    continue
                for endpoint in monitor.spec.get("podMetricsEndpoints") or []:
                    port = pod.ports.get(str(endpoint.get("port")))
                    if port is None:
                        continue
                    request = Request(port, "GET", str(endpoint.get("path") or "/metrics"))
                    why = f"{monitor.ref} scrapes port {endpoint.get('port')}"
                    yield Path(source, pod_peer(tree, pod), request, why, monitor)


def _pipeline_paths(tree: Tree, pods: Sequence[Pod]) -> Iterator[Path]:
    steps = [p for p in pods if p.role.startswith("pipeline step")]
    for param, url in sorted(pipeline_urls(tree).items()):
        parts = urlsplit(url)
        host = (parts.hostname or "").split(".")
        declared = [
            s
            for s in tree.prerequisites.services
            if len(host) > 1 and (s.name, s.namespace) == tuple(host[:2])
        ]
        for service in declared:
            target = Peer(
                f"{service.role} {service.namespace}/{service.name}",
                service.namespace,
                service.pod_labels,
                None,
                service.sidecar,
                {},
            )
            request = Request(parts.port or service.port, "GET", "/")
            for step in steps[:1]:
                why = f"the pipeline's {param}"
                yield Path(pod_peer(tree, step), target, request, why, step.owner)


def _refused(tree: Tree, policies: Sequence[Obj], path: Path) -> tuple[str, list[Obj]] | None:
    """(policy kind, the policies to blame) when the request of ``path`` is refused."""
    blame = network_refusers(tree, policies, path.source, path.target, path.request)
    if blame:
        return "NetworkPolicy", blame
    blame = authorization_refusers(policies, path.source, path.target, path.request)
    return ("AuthorizationPolicy", blame) if blame else None


def _problem(prefix: str, layer: str, blame: list[Obj], paths: list[Path]) -> Problem:
    source = paths[0].source
    names = ", ".join(p.ref for p in blame)
    identity = "" if source.sidecar else " (it has no sidecar, so no mTLS identity)"
    targets = "; ".join(f"{p.target.name} on port {p.request.port} ({p.why})" for p in paths)
    caller = paths[0].caller
    fix = f"admit {source.name} in {names}" + (
        " by a selector that needs no mTLS identity, or give it a sidecar" if identity else ""
    )
    if caller is not None:
        # Admitting the gateway would admit every cluster-local caller past the transformer.
        fix = (
            f"give {caller.name} a sidecar (require one in {caller.namespace}) and admit its "
            f"identity in {names}, not the gateway's"
        )
    return Problem(
        blame[0],
        RULE,
        f"{prefix}{source.name}{identity} is refused by {names} ({layer}): "
        f"it cannot reach {targets}",
        fix,
    )


def _key(path: Path) -> tuple[str, str, Request]:
    return path.source.name, path.target.name, path.request


def _refusals(
    tree: Tree, policies: Sequence[Obj], paths: Sequence[Path], skip: set[tuple[str, str, Request]]
) -> dict[tuple[str, str, str], tuple[list[Obj], list[Path]]]:
    """Refused paths grouped by (layer, policies, source); ``skip`` holds known refusals."""
    grouped: dict[tuple[str, str, str], tuple[list[Obj], list[Path]]] = {}
    for path in paths:
        refused = _refused(tree, policies, path)
        if refused is None or _key(path) in skip:
            continue
        skip.add(_key(path))
        layer, blame = refused
        key = (layer, ",".join(p.ref for p in blame), path.source.name)
        grouped.setdefault(key, (blame, []))[1].append(path)
    return grouped


def _paths(tree: Tree, pods: Sequence[Pod]) -> list[Path]:
    return [
        *_serving_paths(tree, pods),
        *_prometheus_paths(tree, pods),
        *_pipeline_paths(tree, pods),
    ]


def _unenforced(tree: Tree, component: str, extra: Sequence[Obj]) -> Iterator[Problem]:
    """Component AuthorizationPolicies over a namespace where no pod has a sidecar."""
    for policy in extra:
        namespace = policy.namespace or ""
        if policy.kind != "AuthorizationPolicy" or namespace == ROOT_NAMESPACE:
            continue
        if not tree.sidecar_namespace(namespace):
            yield Problem(
                policy,
                RULE,
                f"with component {component} included: {policy.ref} is enforced by no "
                f"sidecar: namespace {namespace} has no istio-injection=enabled in "
                "platform/prerequisites.yaml and the component does not require sidecars "
                "there, so the rehearsal cannot check whom it refuses",
                f"list {namespace} in the {SIDECARS_ANNOTATION} annotation of the "
                f"component's kustomization.yaml ({component})",
            )


def check(tree: Tree, pods: Sequence[Pod]) -> list[Problem]:
    paths = _paths(tree, pods)
    policies = [o for o in tree.objects if o.kind in ("NetworkPolicy", "AuthorizationPolicy")]
    refused: set[tuple[str, str, Request]] = set()
    problems = [
        _problem("", layer, blame, group)
        for (layer, _, _), (blame, group) in _refusals(tree, policies, paths, refused).items()
    ]
    for component, objects in sorted(tree.components.items()):
        extra = [o for o in objects if o.kind in ("NetworkPolicy", "AuthorizationPolicy")]
        if not extra:
            continue
        sidecars = tree.component_sidecars.get(component, frozenset())
        played = replace(tree, injected=sidecars)
        problems += _unenforced(played, component, extra)
        known = set(refused)
        injected = f" (sidecars in {', '.join(sorted(sidecars))})" if sidecars else ""
        prefix = f"with component {component} included{injected}: "
        grouped = _refusals(played, [*policies, *extra], _paths(played, pods), known)
        problems += [
            _problem(prefix, layer, blame, group)
            for (layer, _, _), (blame, group) in grouped.items()
        ]
    return problems
