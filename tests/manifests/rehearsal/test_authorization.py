"""The opt-in authorization component, played with the sidecars it requires: a transformer
or router that runs as the wrong account, or a component that requires no sidecars, fails
`nexus lint`, naming the object."""

from __future__ import annotations

from collections.abc import Callable

from tests.manifests.rehearsal.conftest import Result, Tree

RULE = "rehearsal-reachability"
COMPONENT = "platform/k8s/components/authorization/kustomization.yaml"


def test_shipped_component_is_played_with_its_sidecars(lint: Callable[[], Result]) -> None:
    result = lint()
    assert result.code == 0, result.findings
    assert not [f for f in result.findings if f["rule"] == RULE]


def test_transformer_without_service_account(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.replace(
        "inference_services/prod/inferenceservice.llama-8b.yaml",
        "    serviceAccountName: nexus-transformer\n",
        "",
    )
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "the transformer pod of InferenceService nexus/llama-8b is")
    assert found["message"].startswith("with component authorization included")
    assert "AuthorizationPolicy nexus/predictors-from-transformers" in found["message"]
    assert "the predictor pod of InferenceService nexus/llama-8b" in found["message"]
    # The other InferenceServices keep their account and stay admitted.
    assert not result.naming(RULE, "the transformer pod of InferenceService nexus/mistral-7b")


def test_graph_without_service_account(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.replace(
        "graphs/inferencegraph.chat-split.yaml", "  serviceAccountName: nexus-router\n", ""
    )
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "the router pod of InferenceGraph nexus/chat-split is")
    assert "AuthorizationPolicy nexus/transformers-from-routers-and-ingress" in found["message"]
    assert "the transformer pod of InferenceService nexus/llama-8b" in found["message"]


def test_component_requiring_no_sidecars(tree: Tree, lint: Callable[[], Result]) -> None:
    # Without sidecars in `nexus` its policies are never enforced: a clean run proves nothing.
    tree.replace(COMPONENT, "    nexus.dev/requires-sidecars: nexus,knative-serving\n", "")
    tree.replace(
        "graphs/inferencegraph.chat-split.yaml", "  serviceAccountName: nexus-router\n", ""
    )
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "AuthorizationPolicy nexus/predictors-from-transformers is")
    assert "enforced by no sidecar" in found["message"]
    assert "nexus.dev/requires-sidecars" in found["fix"]
    # The planted router is not reported: nothing would refuse it.
    assert not result.naming(RULE, "the router pod of InferenceGraph nexus/chat-split")


def test_service_accounts_left_out_of_the_base(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.replace("platform/k8s/base/kustomization.yaml", "  - serviceaccounts.yaml\n", "")
    result = lint()
    assert result.code == 1
    found = result.first("rehearsal-references", "nexus-transformer")
    assert "ServiceAccount" in found["message"]
    assert result.naming("rehearsal-references", "nexus-router")
