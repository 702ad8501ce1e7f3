"""NetworkPolicy and Istio AuthorizationPolicy, evaluated for one request between two peers.

NetworkPolicy (Kubernetes ``networking.k8s.io/v1``): a pod selected by a policy of a given
direction is isolated in that direction and admits only what some rule of some selecting
policy admits (rules add up, nothing subtracts). A peer with only a ``podSelector`` means
pods of the policy's namespace; with a ``namespaceSelector``, pods of the matching
namespaces (``kubernetes.io/metadata.name`` is on every namespace); ``ipBlock`` is not
modelled and matches no pod. Ports match by number or by the pod's port name.

AuthorizationPolicy (Istio ``security.istio.io/v1``), enforced only by a sidecar (or a
gateway) of the called pod: DENY policies first, then, if any ALLOW policy selects the
workload, the request needs a matching ALLOW rule. ``source.principals`` and
``source.namespaces`` are matched against the peer's mTLS identity
``cluster.local/ns/<ns>/sa/<sa>`` (istio 86c9f01 ``pilot/pkg/security/authz/model/
generator.go``: ``srcPrincipalGenerator`` matches the authenticated principal with the
``spiffe://`` prefix, ``srcNamespaceGenerator`` an authenticated-principal regex
``.*/ns/<ns>/.*``), so a caller without a sidecar matches neither and is refused.
Policies in the root namespace (istio-system) apply to every namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final

from nexus.manifests.rehearsal.pods import selects
from nexus.manifests.rehearsal.tree import Obj, Tree

ROOT_NAMESPACE: Final = "istio-system"


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of a request: where it runs, its labels and its mesh identity."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    service_account: str | None
    sidecar: bool
    ports: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Request:
    port: int
    method: str
    path: str


def _peer_matches(tree: Tree, policy_ns: str, peer: Mapping[str, Any], other: Peer) -> bool:
    if "ipBlock" in peer:
        return False
    ns_selector = peer.get("namespaceSelector")
    if ns_selector is None:
        in_ns = other.namespace == policy_ns
    else:
        labels = tree.namespace_labels(other.namespace) or {
            "kubernetes.io/metadata.name": other.namespace
        }
        in_ns = selects(ns_selector, labels)
    pod_selector = peer.get("podSelector")
    return in_ns and (pod_selector is None or selects(pod_selector, other.labels))


def _port_matches(ports: Sequence[Mapping[str, Any]], request: Request, target: Peer) -> bool:
    if not ports:
        return True
    for port in ports:
        value = port.get("port")
        if value is None:
            return True
        number = target.ports.get(value) if isinstance(value, str) else value
        if not isinstance(number, int):
            continue
        end = port.get("endPort")
        if number <= request.port <= (end if isinstance(end, int) else number):
            return True
    return False


def _types(policy: Obj) -> set[str]:
    declared = policy.spec.get("policyTypes")
    if declared:
        return {str(t) for t in declared}
    return {"Ingress", "Egress"} if "egress" in policy.spec else {"Ingress"}


def network_refusers(
    tree: Tree, policies: Sequence[Obj], source: Peer, target: Peer, request: Request
) -> list[Obj]:
    """The NetworkPolicies that isolate a side and admit nothing of this request."""
    for direction, pod, other, key, peers in (
        ("Ingress", target, source, "ingress", "from"),
        ("Egress", source, target, "egress", "to"),
    ):
        selecting = [
            p
            for p in policies
            if p.kind == "NetworkPolicy"
            and p.namespace == pod.namespace
            and direction in _types(p)
            and selects(p.spec.get("podSelector"), pod.labels)
        ]
        if not selecting:
            continue
        admitted = any(
            (
                not rule.get(peers)
                or any(_peer_matches(tree, p.namespace or "", x, other) for x in rule[peers])
            )
            and _port_matches(rule.get("ports") or [], request, target)
            for p in selecting
            for rule in p.spec.get(key) or []
        )
        if not admitted:
            return selecting
    return []


def _source_matches(source: Mapping[str, Any], peer: Peer) -> bool:
    principal = f"cluster.local/ns/{peer.namespace}/sa/{peer.service_account or 'default'}"
    mtls = peer.sidecar
    checks: tuple[tuple[str, Callable[[str], bool]], ...] = (
        ("principals", lambda v: mtls and fnmatchcase(principal, v)),
        ("namespaces", lambda v: mtls and fnmatchcase(peer.namespace, v)),
    )
    for key, test in checks:
        if key in source and not any(test(str(v)) for v in source[key]):
            return False
        negated = "not" + key[0].upper() + key[1:]
        if negated in source and any(test(str(v)) for v in source[negated]):
            return False
    return not any(k in source for k in ("ipBlocks", "remoteIpBlocks", "requestPrincipals"))


def _path_matches(pattern: str, path: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return path.endswith(pattern[1:])
    return pattern == path


def _operation_matches(operation: Mapping[str, Any], request: Request) -> bool:
    tests: tuple[tuple[str, Callable[[Any], bool]], ...] = (
        ("ports", lambda v: str(v) == str(request.port)),
        ("methods", lambda v: str(v) == request.method),
        ("paths", lambda v: _path_matches(str(v), request.path)),
    )
    for key, test in tests:
        if key in operation and not any(test(v) for v in operation[key]):
            return False
        negated = "not" + key[0].upper() + key[1:]
        if negated in operation and any(test(v) for v in operation[negated]):
            return False
    return True


def _rule_matches(rule: Mapping[str, Any], peer: Peer, request: Request) -> bool:
    sources = rule.get("from")
    if sources and not any(_source_matches(s.get("source") or {}, peer) for s in sources):
        return False
    operations = rule.get("to")
    return not operations or any(
        _operation_matches(o.get("operation") or {}, request) for o in operations
    )


def authorization_refusers(
    policies: Sequence[Obj], source: Peer, target: Peer, request: Request
) -> list[Obj]:
    """The AuthorizationPolicies that refuse this request at the target's sidecar."""
    if not target.sidecar:
        return []
    applying = [
        p
        for p in policies
        if p.kind == "AuthorizationPolicy"
        and p.namespace in (target.namespace, ROOT_NAMESPACE)
        and selects(p.spec.get("selector"), target.labels)
    ]
    denying = [
        p
        for p in applying
        if p.spec.get("action") == "DENY"
        and any(_rule_matches(r, source, request) for r in p.spec.get("rules") or [])
    ]
    if denying:
        return denying
    allowing = [p for p in applying if p.spec.get("action", "ALLOW") == "ALLOW"]
    if allowing and not any(
        _rule_matches(r, source, request) for p in allowing for r in p.spec.get("rules") or []
    ):
        return allowing
    return []
