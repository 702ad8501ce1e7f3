"""The controller's status API: Kubernetes and Argo CD shapes over the local platform.

This is the contract the release pipeline waits on, so it answers the same objects a
cluster would: ``GET /api/v1/applications/{name}`` (Argo CD's Application with
``status.sync`` and ``status.health``), and the KServe resources under
``/apis/serving.kserve.io/...`` with the spec as committed to Git (after KServe's
defaulting webhook) and KServe's status
(``conditions``, ``url``, ``components.predictor.traffic`` and the rolled-out
revisions), ``/api/v1/events`` with the Warning events KServe records when
Knative refuses a component (``admission``), and the platform's own services (MLflow,
Redis, Prometheus) as Pods of ``nexus-system`` (``/api/v1/namespaces/nexus-system/pods``).
Building the objects is pure (``isvc_object`` and friends take a view of the
controller), which keeps the shapes testable without processes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from nexus.local.admission import Event
from nexus.local.resources import Resource, cluster_host
from nexus.local.revisions import RevisionState, TrafficTarget, converged

Health = Literal["Healthy", "Progressing", "Degraded"]
# A container's state as ``kubectl get pods`` words it.
ServiceState = Literal["Running", "Starting", "Restarting", "CrashLoopBackOff"]
Sync = Literal["Synced", "OutOfSync"]
KSERVE_GROUP = "serving.kserve.io"
ISVC_APP = "nexus-inference-services"
GRAPH_APP = "nexus-graphs"
SYSTEM_NAMESPACE = "nexus-system"


@dataclass(frozen=True, slots=True)
class IsvcView:
    resource: Resource
    state: RevisionState
    desired: tuple[TrafficTarget, ...]
    ready: Mapping[str, bool] = field(default_factory=dict)
    failures: Mapping[str, str] = field(default_factory=dict)
    restarting: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None
    error: str | None = None
    refusal: str | None = None  # KServe's InternalError when Knative refused the newest spec
    live: Mapping[str, Any] | None = None  # the object after KServe's defaulting webhook


@dataclass(frozen=True, slots=True)
class GraphView:
    resource: Resource
    url: str | None
    ready: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ServiceView:
    name: str
    port: int
    state: ServiceState
    ready: bool
    restarts: int
    message: str | None = None  # why it is waiting (the last exit, or the crash loop)


@dataclass(frozen=True, slots=True)
class Snapshot:
    isvcs: tuple[IsvcView, ...] = ()
    graphs: tuple[GraphView, ...] = ()
    head: str | None = None  # newest commit seen in Git
    applied: str | None = None  # commit whose spec is applied
    sync_error: str | None = None
    events: tuple[Event, ...] = ()
    services: tuple[ServiceView, ...] = ()


def _condition(kind: str, ok: bool, message: str | None = None) -> dict[str, str]:
    condition = {"type": kind, "status": "True" if ok else "False"}
    if not ok and message:
        condition["reason"], condition["message"] = "NotReady", message
    return condition


def isvc_ready(view: IsvcView) -> bool:
    serving = [t for t in view.state.traffic if t.percent > 0]
    return (
        view.error is None
        and bool(serving)
        and converged(view.state, view.desired)
        and all(view.ready.get(t.revision, False) for t in serving)
    )


def isvc_health(view: IsvcView) -> Health:
    live = {t.revision for t in (*view.desired, *view.state.traffic) if t.percent > 0}
    if view.error is not None or any(name in view.failures for name in live):
        return "Degraded"
    return "Healthy" if isvc_ready(view) else "Progressing"


def _why_not_ready(view: IsvcView) -> str:
    if view.error:
        return view.error
    if view.refusal and not view.state.traffic:
        return view.refusal
    failed = [f"{name}: {why}" for name, why in view.failures.items()]
    if failed:
        return "; ".join(failed)
    if view.restarting:
        return "; ".join(view.restarting.values())
    return "waiting for revisions to become ready"


def isvc_object(view: IsvcView) -> dict[str, Any]:
    """The InferenceService as Git has it, with KServe's status."""
    state = view.state
    ready = isvc_ready(view)
    message = None if ready else _why_not_ready(view)
    latest = state.latest
    predictor: dict[str, Any] = {
        "traffic": [
            {
                "revisionName": t.revision,
                "percent": t.percent,
                "latestRevision": t.latest,
                "tag": t.tag,
            }
            for t in state.traffic
        ],
        "latestCreatedRevision": latest.name if latest else None,
        "latestReadyRevision": state.latest_ready,
        "latestRolledoutRevision": state.latest_rolled_out,
        "previousRolledoutRevision": state.previous_rolled_out,
    }
    res = view.resource
    status = {
        "url": view.url,
        "address": {"url": f"http://{cluster_host(res.name, res.namespace)}"},
        "conditions": [
            _condition("PredictorReady", ready, message),
            _condition("Ready", ready, message),
        ],
        "components": {"predictor": {k: v for k, v in predictor.items() if v is not None}},
    }
    return {**(view.live if view.live is not None else res.body), "status": status}


def event_object(event: Event) -> dict[str, Any]:
    """A ``v1`` Event on an InferenceService, as ``kubectl get events -o json`` has it."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": event.namespace},
        "involvedObject": {
            "apiVersion": f"{KSERVE_GROUP}/v1beta1",
            "kind": "InferenceService",
            "name": event.name,
            "namespace": event.namespace,
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message,
    }


def graph_object(view: GraphView) -> dict[str, Any]:
    message = view.error or ("" if view.ready else "waiting for the router")
    return {
        **view.resource.body,
        "status": {"url": view.url, "conditions": [_condition("Ready", view.ready, message)]},
    }


def application(name: str, snapshot: Snapshot) -> dict[str, Any] | None:
    """Argo CD's Application status for one of the two local applications."""
    health: Health
    if name == ISVC_APP:
        healths = [isvc_health(v) for v in snapshot.isvcs]
    elif name == GRAPH_APP:
        healths = [
            "Degraded" if v.error else "Healthy" if v.ready else "Progressing"
            for v in snapshot.graphs
        ]
    else:
        return None
    if "Degraded" in healths:
        health = "Degraded"
    elif "Progressing" in healths:
        health = "Progressing"
    else:
        health = "Healthy"
    synced = snapshot.sync_error is None and snapshot.applied == snapshot.head is not None
    sync: Sync = "Synced" if synced else "OutOfSync"
    sync_status: dict[str, Any] = {"status": sync, "revision": snapshot.applied}
    if snapshot.sync_error:
        sync_status["message"] = snapshot.sync_error
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "status": {"sync": sync_status, "health": {"status": health}},
    }


def pod_object(view: ServiceView) -> dict[str, Any]:
    """A platform service as a ``v1`` Pod: phase, Ready condition, its container's state."""
    if view.state in ("Running", "Starting"):
        state: dict[str, Any] = {"running": {}}
    else:
        state = {"waiting": {"reason": view.state, "message": view.message or ""}}
    container = {"name": view.name, "ready": view.ready, "restartCount": view.restarts,
                 "state": state, "ports": [{"containerPort": view.port}]}  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": view.name, "namespace": SYSTEM_NAMESPACE},
        "status": {
            "phase": "Running" if "running" in state else "Pending",
            "conditions": [_condition("Ready", view.ready, view.message or view.state)],
            "containerStatuses": [container],
        },
    }


def _not_found(what: str) -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
            "code": 404, "message": f"{what} not found"}  # fmt: skip
    return web.json_response(body, status=404)


def status_app(snapshot: Callable[[], Snapshot]) -> web.Application:
    """The aiohttp app; ``snapshot`` returns the controller's current view."""

    async def app_status(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = application(name, snapshot())
        return web.json_response(found) if found else _not_found(f"application {name!r}")

    def lister(
        version: str, kind: str, build: Callable[[Any], dict[str, Any]], pick: str
    ) -> tuple[Any, Any]:
        def views(namespace: str | None) -> list[Any]:
            items = getattr(snapshot(), pick)
            return [v for v in items if namespace in (None, v.resource.namespace)]

        async def many(request: web.Request) -> web.Response:
            items = [build(v) for v in views(request.match_info.get("ns"))]
            return web.json_response(
                {"apiVersion": f"{KSERVE_GROUP}/{version}", "kind": f"{kind}List", "items": items}
            )

        async def one(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            for view in views(request.match_info["ns"]):
                if view.resource.name == name:
                    return web.json_response(build(view))
            return _not_found(f"{kind} {request.match_info['ns']}/{name}")

        return many, one

    async def events(request: web.Request) -> web.Response:
        namespace = request.match_info.get("ns")
        items = [event_object(e) for e in snapshot().events if namespace in (None, e.namespace)]
        return web.json_response({"apiVersion": "v1", "kind": "EventList", "items": items})

    async def pods(request: web.Request) -> web.Response:
        namespace = request.match_info.get("ns")
        found = [] if namespace not in (None, SYSTEM_NAMESPACE) else snapshot().services
        items = [pod_object(view) for view in found]
        return web.json_response({"apiVersion": "v1", "kind": "PodList", "items": items})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "head": snapshot().head})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/v1/applications/{name}", app_status)
    app.router.add_get("/api/v1/events", events)
    app.router.add_get("/api/v1/namespaces/{ns}/events", events)
    app.router.add_get("/api/v1/pods", pods)
    app.router.add_get("/api/v1/namespaces/{ns}/pods", pods)
    for version, plural, kind, build, pick in (
        ("v1beta1", "inferenceservices", "InferenceService", isvc_object, "isvcs"),
        ("v1alpha1", "inferencegraphs", "InferenceGraph", graph_object, "graphs"),
    ):
        many, one = lister(version, kind, build, pick)
        base = f"/apis/{KSERVE_GROUP}/{version}/namespaces/{{ns}}/{plural}"
        app.router.add_get(base, many)
        app.router.add_get(f"/apis/{KSERVE_GROUP}/{version}/{plural}", many)
        app.router.add_get(base + "/{name}", one)
    return app
