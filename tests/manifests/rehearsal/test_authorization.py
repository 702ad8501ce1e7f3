"""The opt-in authorization component, played with the sidecars it requires: a transformer
or router that runs as the wrong account, a component that requires no sidecars, or a
release pipeline whose quality gate cannot ask the predictors, fails `nexus lint`, naming
the object."""

from __future__ import annotations

from collections.abc import Callable

from tests.manifests.rehearsal.conftest import Result, Tree

RULE = "rehearsal-reachability"
COMPONENT = "platform/k8s/components/authorization/kustomization.yaml"
POLICIES = "platform/k8s/components/authorization/authorizationpolicies.yaml"
SIDECARS = "    nexus.dev/requires-sidecars: nexus,knative-serving,kubeflow\n"
STEP = "the pipeline step pod of ServiceAccount kubeflow/nexus-release"
GATE = "the release pipeline's quality gate"


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
    tree.replace(COMPONENT, SIDECARS, "")
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


def test_release_gate_without_its_rule(tree: Tree, lint: Callable[[], Result]) -> None:
    # The quality gate asks the predictors past the transformer: without its rule every
    # gated release would stop at 403 RBAC: access denied.
    tree.replace(
        POLICIES,
        '            principals: ["cluster.local/ns/kubeflow/sa/nexus-release"]\n',
        '            principals: ["cluster.local/ns/kubeflow/sa/someone-else"]\n',
    )
    result = lint()
    assert result.code == 1
    found = result.first(RULE, f"{STEP} is refused")
    assert found["message"].startswith("with component authorization included")
    assert "AuthorizationPolicy nexus/predictors-from-transformers" in found["message"]
    # Every predictor, each under its runtime's OpenAI prefix, for the gate and the judge.
    message = found["message"]
    assert (
        f"InferenceService nexus/llama-70b on port 8012 ({GATE}: POST /v1/completions)" in message
    )
    assert f"nexus/llama-8b on port 8012 ({GATE}: POST /openai/v1/chat/completions)" in message
    assert f"nexus/mistral-7b on port 8012 ({GATE}: GET /openai/v1/models)" in message


def test_release_gate_rule_is_limited_to_its_paths(tree: Tree, lint: Callable[[], Result]) -> None:
    tree.replace(POLICIES, "              - /openai/v1/completions\n", "")
    result = lint()
    found = result.first(RULE, f"{STEP} is refused")
    assert f"({GATE}: POST /openai/v1/completions)" in found["message"]
    assert f"({GATE}: POST /v1/completions)" not in found["message"]


def test_release_gate_without_a_sidecar(tree: Tree, lint: Callable[[], Result]) -> None:
    # Without a sidecar the step reaches a predictor only through knative-local-gateway, as
    # the gateway's identity; the fix is the step's own identity, never the gateway's.
    tree.replace(COMPONENT, SIDECARS, SIDECARS.replace(",kubeflow", ""))
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "the Istio ingress gateway is refused")
    assert "AuthorizationPolicy nexus/predictors-from-transformers" in found["message"]
    assert f"({GATE}: POST /v1/completions from {STEP}, which has no sidecar)" in found["message"]
    assert found["fix"].startswith(f"give {STEP} a sidecar (require one in kubeflow)")
    assert found["fix"].endswith("not the gateway's")
