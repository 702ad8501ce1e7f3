"""Knative tag routing as KServe uses it: how a revision at 0 % is reached by name.

With the annotation ``serving.kserve.io/enable-tag-routing: "true"`` KServe gives the latest
revision of a component the traffic tag ``latest``, and whenever ``canaryTrafficPercent``
is below 100 the previous rolled-out revision gets ``prev`` (kserve/kserve
``pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go``,
``reconcileKsvc``'s traffic targets, master aaac4e294: ``prev`` is set without the
annotation too). The tag is kept at ``canaryTrafficPercent: 0``, so the candidate can be
evaluated before it takes any traffic.

Knative serves a tagged target under the host its ``tag-template`` makes, by default
``{{.Tag}}-{{.Name}}`` (knative/serving ``vendor/knative.dev/networking/pkg/config/
config.go``, ``DefaultTagTemplate``), in the Knative Service's domain. KServe names the
predictor's Knative Service ``<isvc>-predictor``, so the candidate's predictor answers at
``latest-<isvc>-predictor.<namespace>.svc.cluster.local``; without a tag,
``<isvc>-predictor.<namespace>.svc.cluster.local`` is the predictor's own route, by its traffic
percents (how the quality gate reaches a judge InferenceService). The local front reads the
same hosts (``nexus.local.front``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

ANNOTATION: Final = "serving.kserve.io/enable-tag-routing"
Tag = Literal["latest", "prev"]
TAGS: Final[tuple[Tag, ...]] = ("latest", "prev")
CLUSTER_DOMAIN: Final = "svc.cluster.local"


def enabled(isvc: Mapping[str, Any]) -> bool:
    """Whether the InferenceService asks for tag routing (the annotation's exact value)."""
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION, "")).lower() == "true"


def predictor_host(isvc: str, namespace: str, tag: Tag) -> str:
    """The cluster-local host of the ``tag`` revision of ``isvc``'s predictor."""
    return f"{tag}-{isvc}-predictor.{namespace}.{CLUSTER_DOMAIN}"


def service_host(isvc: str, namespace: str) -> str:
    """The cluster-local host of ``isvc``'s predictor, its revisions drawn by percent."""
    return f"{isvc}-predictor.{namespace}.{CLUSTER_DOMAIN}"


def _name(host: str) -> str:
    return host.split(":", 1)[0].split(".", 1)[0].lower()


def names_predictor(host: str, isvc: str) -> bool:
    """Whether a request's Host is ``isvc``'s untagged predictor host (``service_host``)."""
    return _name(host) == f"{isvc}-predictor"


def parse_host(host: str, isvc: str) -> Tag | None:
    """The tag a request's Host names for ``isvc``'s predictor (port and domain ignored)."""
    name = _name(host)
    for tag in TAGS:
        if name == f"{tag}-{isvc}-predictor":
            return tag
    return None
