"""The status API's shapes: what the release pipeline and `nexus status` read."""

from __future__ import annotations

from typing import Any

from nexus.local.report import status_table
from nexus.local.resources import Resource
from nexus.local.revisions import RevisionState, desired_traffic, observe, route
from nexus.local.status import (
    GraphView,
    IsvcView,
    ServiceView,
    Snapshot,
    application,
    graph_object,
    isvc_health,
    isvc_object,
    pod_object,
)

BODY: dict[str, Any] = {
    "apiVersion": "serving.kserve.io/v1beta1",
    "kind": "InferenceService",
    "metadata": {"name": "llama-8b", "namespace": "nexus"},
    "spec": {"predictor": {"containers": [{"image": "x"}], "canaryTrafficPercent": 20}},
}
RESOURCE = Resource("InferenceService", "llama-8b", "nexus", BODY, "isvc.yaml")


def canary_view(**extra: Any) -> IsvcView:
    state = route(
        observe(RevisionState(), "llama-8b", {"containers": [{"image": "old"}]}),
        desired_traffic(observe(RevisionState(), "llama-8b", {}), None),
        lambda _: True,
    )
    state = route(state, desired_traffic(state, None), lambda _: True)
    state = observe(state, "llama-8b", BODY["spec"]["predictor"])
    desired = desired_traffic(state, 20)
    state = route(state, desired, lambda _: True)
    ready = {r.name: True for r in state.revisions}
    return IsvcView(RESOURCE, state, desired, ready=ready, url="http://127.0.0.1:1", **extra)


def test_isvc_object_has_kserve_status_shape() -> None:
    obj = isvc_object(canary_view())
    assert obj["spec"] == BODY["spec"], "the spec is the one in Git"
    status = obj["status"]
    assert status["url"] == "http://127.0.0.1:1"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "PredictorReady": "True",
    }
    predictor = status["components"]["predictor"]
    assert predictor["traffic"] == [
        {
            "revisionName": "llama-8b-predictor-00002",
            "percent": 20,
            "latestRevision": True,
            "tag": "latest",
        },
        {
            "revisionName": "llama-8b-predictor-00001",
            "percent": 80,
            "latestRevision": False,
            "tag": "prev",
        },
    ]
    assert predictor["latestRolledoutRevision"] == "llama-8b-predictor-00001"
    assert predictor["latestCreatedRevision"] == "llama-8b-predictor-00002"
    assert predictor["latestReadyRevision"] == "llama-8b-predictor-00002"


def test_a_restarting_process_makes_the_isvc_progressing_and_says_why() -> None:
    why = "llama-8b-predictor-00002 restarting (1 restarts) after: exited with code -9"
    view = canary_view(restarting={"llama-8b-predictor-00002": why})
    view = IsvcView(view.resource, view.state, view.desired,
                    ready={"llama-8b-predictor-00001": True}, restarting=view.restarting)  # fmt: skip
    ready = next(c for c in isvc_object(view)["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["message"]) == ("False", why)
    assert isvc_health(view) == "Progressing"


def test_a_crash_looping_process_makes_the_isvc_degraded_and_not_ready() -> None:
    view = canary_view(failures={"llama-8b-predictor-00002": "exited with code -9"})
    view = IsvcView(view.resource, view.state, view.desired,
                    ready={"llama-8b-predictor-00001": True}, failures=view.failures)  # fmt: skip
    ready = next(c for c in isvc_object(view)["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert "exited with code -9" in ready["message"]
    assert isvc_health(view) == "Degraded"


def test_application_shape_sync_and_health() -> None:
    view = canary_view()
    synced = application("nexus-inference-services", Snapshot((view,), (), "abc", "abc"))
    assert synced == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": "nexus-inference-services"},
        "status": {
            "sync": {"status": "Synced", "revision": "abc"},
            "health": {"status": "Healthy"},
        },
    }
    behind = application("nexus-inference-services", Snapshot((view,), (), "def", "abc"))
    assert behind is not None
    assert behind["status"]["sync"]["status"] == "OutOfSync"
    assert application("unknown", Snapshot()) is None


def test_graph_object_and_graph_app_health() -> None:
    graph = Resource("InferenceGraph", "chat", "nexus", {"kind": "InferenceGraph", "spec": {}}, "g")
    starting = GraphView(graph, "http://127.0.0.1:2", ready=False)
    assert graph_object(starting)["status"]["conditions"][0]["status"] == "False"
    app = application("nexus-graphs", Snapshot((), (starting,), "a", "a"))
    assert app is not None
    assert app["status"]["health"]["status"] == "Progressing"
    ready = GraphView(graph, "http://127.0.0.1:2", ready=True)
    assert graph_object(ready)["status"] == {
        "url": "http://127.0.0.1:2",
        "conditions": [{"type": "Ready", "status": "True"}],
    }


def test_a_platform_service_is_a_pod_and_status_shows_it_restarting() -> None:
    down = ServiceView("mlflow", 5000, "Restarting", False, 1, "exited with code -9 (log: x)")
    pod = pod_object(down)
    assert pod["metadata"] == {"name": "mlflow", "namespace": "nexus-system"}
    assert pod["status"]["phase"] == "Pending"
    container = pod["status"]["containerStatuses"][0]
    assert (container["ready"], container["restartCount"]) == (False, 1)
    assert container["state"] == {
        "waiting": {"reason": "Restarting", "message": "exited with code -9 (log: x)"}
    }
    up = pod_object(ServiceView("redis", 6379, "Running", True, 0))
    assert (up["status"]["phase"], up["status"]["containerStatuses"][0]["state"]) == (
        "Running",
        {"running": {}},
    )
    live = {"applications": [], "inference_services": [], "graphs": [], "services": [pod, up]}
    table = status_table(live).splitlines()
    assert table[-4].split() == ["SERVICE", "READY", "STATUS", "RESTARTS", "PORT"]
    assert table[-3].split() == ["mlflow", "False", "Restarting", "1", "5000"]
    assert table[-2].split() == ["redis", "True", "Running", "0", "6379"]
    assert table[-1] == "  ! mlflow: exited with code -9 (log: x)"
