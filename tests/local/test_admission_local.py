"""The local platform refuses what the cluster refuses, and defaults what KServe defaults.

The real controller on a real bare repository; every change is a real push. Knative's
refusals reach a cluster as KServe's ``InternalError`` event on the InferenceService
(``nexus.local.admission`` says why), the previous revision keeps serving, and a new
InferenceService never becomes Ready.
"""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import pytest

from nexus.errors import PlatformError
from nexus.local import platform
from tests.local.conftest import API_KEY, ISVC, ISVC_PATH, LocalController

PORT_REFUSAL = (
    "fails to reconcile predictor: fails to reconcile knative service: admission webhook "
    '"validation.webhook.serving.knative.dev" denied the request: validation failed: '
    "Port name http is not allowed: spec.predictor.containers[0].ports\n"
    "Name must be empty, or one of: 'h2c', 'http1'"
)
TIMEOUT_REFUSAL = (
    "fails to reconcile transformer: fails to reconcile knative service: admission webhook "
    '"validation.webhook.serving.knative.dev" denied the request: validation failed: '
    "expected 0 <= 900 <= 600: spec.template.spec.timeoutSeconds"
)


def synced(controller: LocalController) -> None:
    head = controller.head()
    controller.wait(lambda: controller.application()["status"]["sync"]["revision"] == head,
                    f"commit {head[:8]} synced")  # fmt: skip


def events(controller: LocalController) -> list[dict[str, object]]:
    return list(controller.get("/api/v1/namespaces/nexus/events")["items"])


def chat(controller: LocalController) -> httpx.Response:
    body = {"model": ISVC, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    return httpx.post(controller.isvc()["status"]["url"] + "/openai/v1/chat/completions",
                      json=body, headers={"Authorization": f"Bearer {API_KEY}"},
                      timeout=30)  # fmt: skip


def test_a_refused_update_leaves_the_previous_revision_serving(
    controller: LocalController,
) -> None:
    controller.ready_revision("00001")
    good = controller.read(ISVC_PATH)
    bad = copy.deepcopy(good)
    container = bad["spec"]["predictor"]["containers"][0]
    container["ports"][0]["name"] = "http"
    container["env"].append({"name": "REV", "value": "2"})  # would be a new revision
    assert controller.push(ISVC_PATH, bad, "Name the port http").returncode == 0
    synced(controller)

    found = events(controller)
    assert [(e["type"], e["reason"], e["message"]) for e in found] == [
        ("Warning", "InternalError", PORT_REFUSAL)
    ]
    assert found[0]["involvedObject"] == {
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "name": ISVC, "namespace": "nexus",
    }  # fmt: skip
    # Argo CD applied the InferenceService: Synced, and the object shows Git's spec.
    assert controller.application()["status"]["sync"]["status"] == "Synced"
    live = controller.isvc()
    assert live["spec"]["predictor"]["containers"][0]["ports"][0]["name"] == "http"
    traffic = live["status"]["components"]["predictor"]["traffic"]
    assert [t["revisionName"] for t in traffic] == [f"{ISVC}-predictor-00001"]
    answer = chat(controller)
    assert answer.status_code == 200
    assert answer.headers["x-nexus-revision"] == f"{ISVC}-predictor-00001"

    # The fix goes through, as the next reconcile of KServe would.
    container["ports"][0]["name"] = "h2c"
    assert controller.push(ISVC_PATH, bad, "Port name h2c").returncode == 0
    controller.ready_revision("00002")
    assert len(events(controller)) == 1


def test_a_new_inferenceservice_refused_never_serves_and_nexus_up_says_why(
    controller: LocalController,
) -> None:
    controller.ready_revision("00001")
    other = controller.read(ISVC_PATH)
    other["metadata"]["name"] = "slow"
    other["spec"]["transformer"]["timeout"] = 900
    path = "inference_services/local/inferenceservice.slow.yaml"
    assert controller.push(path, other, "Add slow with a 900 s timeout").returncode == 0
    synced(controller)
    status = controller.get(
        "/apis/serving.kserve.io/v1beta1/namespaces/nexus/inferenceservices/slow"
    )
    ready = [c for c in status["status"]["conditions"] if c["type"] == "Ready"]
    assert ready == [{"type": "Ready", "status": "False", "reason": "NotReady",
                      "message": TIMEOUT_REFUSAL}]  # fmt: skip
    assert status["status"]["url"] is None
    # `nexus up` waits with this function: it stops at once with the webhook's message.
    said: list[str] = []
    with pytest.raises(PlatformError) as refused:
        platform._wait_synced(controller.status_url, 60, said.append)
    assert str(refused.value) == f"the cluster's webhooks refused: slow: {TIMEOUT_REFUSAL}"
    assert f"InferenceService slow: {TIMEOUT_REFUSAL}" in said


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def test_kserve_defaulting_reaches_the_transformer_and_the_live_object(
    controller: LocalController,
) -> None:
    controller.ready_revision("00001")
    # inference_service_defaults.go (KServe >= 0.17) rewrites the legacy name; and without
    # args of its own, the transformer gets exactly what KServe appends
    # (transformer_custom.go): model name, predictor host (here its loopback address), port;
    # the local platform adds only its loopback bind address.
    body = controller.read(ISVC_PATH)
    body["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "Serverless"
    body["spec"]["transformer"]["containers"][0]["args"] = []
    assert controller.push(ISVC_PATH, body, "Serverless, transformer without args").returncode == 0
    synced(controller)
    worker = controller.port(f"{ISVC}-predictor-00001")
    transformer = f"{ISVC}-transformer-00001"
    expected = ["--model_name", ISVC, "--predictor_host", f"127.0.0.1:{worker}",
                "--http_port", str(controller.port(transformer)),
                "--host", "127.0.0.1"]  # fmt: skip

    def restarted() -> bool:
        try:
            return cmdline(controller.pid(transformer))[3:] == expected
        except (OSError, ValueError):
            return False

    controller.wait(restarted, "the transformer restarted with KServe's arguments")
    live = controller.isvc()
    assert live["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    controller.ready_revision("00001")
    assert chat(controller).status_code == 200


def test_standard_mode_ignores_the_canary_percent(controller: LocalController) -> None:
    """``RawDeployment`` is defaulted to ``Standard``, where KServe ignores
    ``canaryTrafficPercent`` silently (kserve#5335): the new spec takes all traffic."""
    controller.ready_revision("00001")
    body = controller.read(ISVC_PATH)
    body["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    body["spec"]["predictor"]["canaryTrafficPercent"] = 20
    body["spec"]["predictor"]["containers"][0]["env"].append({"name": "REV", "value": "2"})
    assert controller.push(ISVC_PATH, body, "Canary 20 % in raw mode").returncode == 0
    controller.ready_revision("00002")
    annotations = controller.isvc()["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "Standard"


def test_after_a_restart_on_a_refused_commit_the_previous_spec_still_serves(
    controller: LocalController,
) -> None:
    """The Knative Service never saw the refused spec, so a controller restart (``nexus
    down`` / ``up``) must not lose what serves: the admitted spec is kept in state.json."""
    controller.ready_revision("00001")
    bad = controller.read(ISVC_PATH)
    bad["spec"]["transformer"]["timeout"] = 900
    bad["spec"]["predictor"]["containers"][0]["env"].append({"name": "REV", "value": "2"})
    assert controller.push(ISVC_PATH, bad, "Transformer timeout 900 s").returncode == 0
    synced(controller)
    controller.restart()
    controller.ready_revision("00001")
    assert chat(controller).headers["x-nexus-revision"] == f"{ISVC}-predictor-00001"
    assert [e["message"] for e in events(controller)] == [TIMEOUT_REFUSAL]
