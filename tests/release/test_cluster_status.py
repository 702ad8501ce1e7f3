"""The wait step on a cluster: Application and InferenceService from the Kubernetes API.

A loopback server plays the API server for the two resources the ``nexus-release``
ServiceAccount may read (``platform/k8s/pipelines``) and refuses requests without that
account's bearer token, as the API server answers 401 to an unauthenticated request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus.errors import ReleaseError
from nexus.release.plan import ISVC_APPLICATION
from nexus.release.wait import (
    KUBERNETES_API,
    HttpStatus,
    KubernetesStatus,
    status_source,
    wait_rollout,
)
from tests.support.http_server import send_json, serving
from tests.support.processes import REPO

TOKEN = "eyJhbGciOiJSUzI1NiJ9.sa-token"
APPLICATION = f"/apis/argoproj.io/v1alpha1/namespaces/argocd/applications/{ISVC_APPLICATION}"
ISVC = "/apis/serving.kserve.io/v1beta1/namespaces/nexus/inferenceservices/llama-8b"
COMMIT = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def isvc(canary: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "llama-8b", "namespace": "nexus", "generation": 2},
        "spec": {"predictor": {"canaryTrafficPercent": canary}},
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {"predictor": {"traffic": [
                {"revisionName": "llama-8b-predictor-00002", "percent": canary,
                 "latestRevision": True},
                {"revisionName": "llama-8b-predictor-00001", "percent": 100 - canary,
                 "latestRevision": False},
            ]}},
        },
    }  # fmt: skip


@contextlib.contextmanager
def api_server(objects: dict[str, Any]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            seen.append((self.path, auth))
            status, body = 200, objects.get(self.path)
            if auth != f"Bearer {TOKEN}":
                status, body = 401, {"kind": "Status", "reason": "Unauthorized", "code": 401}
            elif body is None:
                status, body = 404, {"kind": "Status", "reason": "NotFound", "code": 404}
            send_json(self, status, body)

    with serving(Handler) as url:
        yield url, seen


def account(tmp_path: Path) -> Path:
    """What the kubelet projects into a pod: the token (no CA needed over plain HTTP)."""
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text(TOKEN + "\n")
    return folder


def test_the_wait_reads_both_resources_with_the_service_account_token(tmp_path: Path) -> None:
    application = {"status": {"sync": {"status": "Synced", "revision": COMMIT}}}
    with api_server({APPLICATION: application, ISVC: isvc(20)}) as (url, seen):
        source = KubernetesStatus(url, "nexus", "llama-8b", credentials=account(tmp_path))
        rollout = wait_rollout(source, commit=COMMIT, expect="canary", percent=20, timeout_s=5)
    assert rollout.synced_revision == COMMIT
    assert rollout.latest_revision == "llama-8b-predictor-00002"
    assert rollout.stable_revision == "llama-8b-predictor-00001"
    assert seen == [(APPLICATION, f"Bearer {TOKEN}"), (ISVC, f"Bearer {TOKEN}")]


def test_an_application_not_yet_at_the_commit_keeps_the_wait_going(tmp_path: Path) -> None:
    application = {"status": {"sync": {"status": "OutOfSync", "revision": "0" * 40}}}
    with api_server({APPLICATION: application, ISVC: isvc(20)}) as (url, _):
        source = KubernetesStatus(url, "nexus", "llama-8b", credentials=account(tmp_path))
        with pytest.raises(ReleaseError, match="application is OutOfSync at 000000000000"):
            wait_rollout(source, commit=COMMIT, expect="canary", percent=20, timeout_s=0.3,
                         poll_s=0.1)  # fmt: skip


def test_without_a_token_the_step_says_which_account_it_needs(tmp_path: Path) -> None:
    source = KubernetesStatus(KUBERNETES_API, "nexus", "llama-8b", credentials=tmp_path)
    with pytest.raises(ReleaseError, match="run the pipeline as nexus-release"):
        source.application()


def test_the_in_cluster_url_selects_the_kubernetes_api() -> None:
    assert isinstance(status_source(KUBERNETES_API, "nexus", "m"), KubernetesStatus)
    assert isinstance(status_source("", "nexus", "m"), KubernetesStatus)
    assert isinstance(status_source("http://127.0.0.1:8000", "nexus", "m"), HttpStatus)


def test_the_rbac_grants_exactly_the_reads_of_the_wait_step() -> None:
    """platform/k8s/pipelines: the paths above are the resources its Roles allow."""
    folder = REPO / "platform" / "k8s" / "pipelines"
    docs = [d for p in sorted(folder.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in yaml.safe_load_all(p.read_text())]  # fmt: skip
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]): d["rules"]
             for d in docs if d["kind"] == "Role"}  # fmt: skip
    assert roles[("nexus", "nexus-release-read")] == [{
        "apiGroups": ["serving.kserve.io"], "resources": ["inferenceservices"],
        "verbs": ["get", "list", "watch"],
    }]  # fmt: skip
    assert roles[("argocd", "nexus-release-read")] == [{
        "apiGroups": ["argoproj.io"], "resources": ["applications"],
        "resourceNames": [ISVC_APPLICATION], "verbs": ["get"],
    }]  # fmt: skip
    (account_doc,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert account_doc["metadata"]["name"] == "nexus-release"
    bindings = [d for d in docs if d["kind"] == "RoleBinding"]
    for binding in bindings:
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "nexus-release",
                                        "namespace": account_doc["metadata"]["namespace"]}]  # fmt: skip
    bound = {(b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings}
    assert bound == {
        ("nexus", "nexus-release-read"),
        ("argocd", "nexus-release-read"),
        # KFP's launcher in every step reads its pod, the launcher ConfigMap and the object
        # store Secret: the run's account needs KFP's own runner Role too.
        (account_doc["metadata"]["namespace"], "pipeline-runner"),
    }
