"""The shipped tree, read directly: what Knative and KServe admission would say about it.

Independent of the linter's rules: every shipped InferenceService goes through the
admission model (``nexus.manifests.admission``) with the repository's runtimes and
``platform/versions.yaml``, as the cluster's webhooks would take it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nexus.manifests import admission
from nexus.manifests.versions import load_versions
from tests.manifests.conftest import REPO_ROOT


def _docs(folder: str) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((REPO_ROOT / folder).rglob("*.yaml"))
        for doc in yaml.safe_load_all(Path(path).read_text(encoding="utf-8"))
        if isinstance(doc, dict)
    ]


VERSIONS = load_versions(REPO_ROOT / "platform" / "versions.yaml")
RUNTIMES = {d["metadata"]["name"]: d for d in _docs("platform/k8s/runtimes") if d["kind"] == "ServingRuntime"}  # fmt: skip
ISVCS = [d for d in _docs("inference_services") if d["kind"] == "InferenceService"]
GRAPHS = [d for d in _docs("graphs") if d["kind"] == "InferenceGraph"]


def test_knative_admits_every_shipped_inference_service() -> None:
    assert ISVCS
    for isvc in ISVCS:
        assert admission.knative_refusals(isvc, VERSIONS, runtimes=RUNTIMES) == []


def test_kserve_defaulting_changes_no_shipped_annotation() -> None:
    # Argo CD compares the manifest with the object after KServe's webhook: they must agree.
    for isvc in ISVCS:
        after = admission.kserve_defaults(isvc, VERSIONS)
        assert after["metadata"]["annotations"] == isvc["metadata"]["annotations"]


def test_every_component_and_graph_sets_a_timeout_knative_accepts() -> None:
    for isvc in ISVCS:
        for component in ("predictor", "transformer"):
            timeout = admission.component_timeout(isvc, component)
            assert timeout is not None
            assert admission.timeout_refusal(timeout) is None
    for graph in GRAPHS:
        timeout = graph["spec"]["timeout"]
        assert admission.timeout_refusal(timeout) is None
        assert max(graph["spec"]["routerTimeouts"].values()) <= timeout


def test_the_vllm_runtime_runs_the_declared_vllm() -> None:
    (container,) = RUNTIMES["nexus-vllm"]["spec"]["containers"]
    assert container["image"] == f"vllm/vllm-openai:v{VERSIONS['vllm']}"
    assert "--disable-log-requests" not in container["args"]


def test_every_inference_service_is_cluster_local() -> None:
    for isvc in ISVCS:
        assert isvc["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
