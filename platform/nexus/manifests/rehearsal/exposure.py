"""Exposure: nothing is reachable from outside the cluster except through the public Gateway.

- InferenceServices and InferenceGraphs need ``networking.knative.dev/visibility:
  cluster-local``: KServe builds the graph's Knative Service with the graph's own labels
  only (kserve aaac4e294 ``pkg/controller/v1alpha1/inferencegraph/knative_reconciler.go``
  ``createKnativeService``: ``Labels: componentMeta.Labels``) and likewise copies an
  InferenceService's labels to its components' Knative Services; without the label
  Knative's route is ExternalIP-visible on the Knative ingress (knative-v1.21.1
  ``pkg/reconciler/route/visibility/visibility.go`` ``routeVisibility`` reads the
  label), a way in that bypasses the public Gateway. The same holds for Knative Services
  in the tree.
- Services of type LoadBalancer or NodePort open a port outside the mesh's entry point.
- Ingresses, and Istio Gateways other than the public one, are more entry points; a
  VirtualService bound to another Gateway than the public one (for example Knative's
  plain-HTTP ``knative-serving/knative-ingress-gateway``) publishes a route past it.
The public Gateway is the one the graphs' VirtualService binds to: the only Gateway of
``platform/k8s/base`` (``PUBLIC_GATEWAY_FILE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from nexus.manifests.rehearsal.tree import Obj, Problem, Tree

RULE: Final = "rehearsal-exposure"
VISIBILITY: Final = "networking.knative.dev/visibility"
CLUSTER_LOCAL: Final = "cluster-local"
PUBLIC_GATEWAY_FILE: Final = "platform/k8s/base/public.gateway.yaml"
MESH: Final = "mesh"


def _public_gateways(tree: Tree) -> set[tuple[str | None, str]]:
    return {
        (g.namespace, g.name)
        for g in tree.of_kind("Gateway")
        if g.source.display == PUBLIC_GATEWAY_FILE
    }


def _knative(obj: Obj) -> Iterator[Problem]:
    if obj.labels.get(VISIBILITY) == CLUSTER_LOCAL:
        return
    yield Problem(
        obj,
        RULE,
        f"{obj.ref} has no label {VISIBILITY}: {CLUSTER_LOCAL}, so Knative gives its "
        "route an external domain on the Knative ingress, past the public Gateway",
        f"add metadata.labels.{VISIBILITY}: {CLUSTER_LOCAL} (KServe copies only the "
        "object's own labels to its Knative Service)",
    )


def _gateway_ref(vs: Obj, ref: str) -> tuple[str | None, str]:
    namespace, _, name = ref.rpartition("/")
    return (namespace or vs.namespace), name


def check(tree: Tree) -> list[Problem]:
    problems: list[Problem] = []
    public = _public_gateways(tree)
    for obj in tree.objects:
        if obj.kind in ("InferenceService", "InferenceGraph") or (
            obj.kind == "Service" and obj.group.startswith("serving.knative.dev")
        ):
            problems += _knative(obj)
        elif obj.kind == "Service" and obj.spec.get("type") in ("LoadBalancer", "NodePort"):
            problems.append(
                Problem(
                    obj,
                    RULE,
                    f"{obj.ref} is of type {obj.spec['type']}: it opens a port outside the "
                    "cluster that bypasses the public Gateway",
                    "make it a ClusterIP Service and route to it through the public Gateway",
                )
            )
        elif obj.kind == "Ingress" or (
            obj.kind == "Gateway" and (obj.namespace, obj.name) not in public
        ):
            problems.append(
                Problem(
                    obj,
                    RULE,
                    f"{obj.ref} is an entry point besides the public Gateway "
                    f"({PUBLIC_GATEWAY_FILE})",
                    "route through the public Gateway with a VirtualService instead",
                )
            )
        elif obj.kind == "VirtualService":
            for ref in obj.spec.get("gateways") or []:
                if ref != MESH and _gateway_ref(obj, str(ref)) not in public:
                    problems.append(
                        Problem(
                            obj,
                            RULE,
                            f"{obj.ref} binds to Gateway {ref}, not the public Gateway",
                            f"bind it to the Gateway of {PUBLIC_GATEWAY_FILE} (or `mesh`)",
                        )
                    )
    return problems
