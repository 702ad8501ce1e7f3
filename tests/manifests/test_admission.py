"""The admission model: what Knative's validation and KServe's defaulting do to an isvc.

Expected values come from the upstream sources cited in ``nexus.manifests.admission``
(Knative knative-v1.21.1, KServe master aaac4e294 = v0.20.0 for these files).
"""

from __future__ import annotations

from typing import Any

import pytest

from nexus.manifests import admission

V021 = {"kserve": "0.21.0", "knative_serving": "1.21.1"}
V016 = {"kserve": "0.16.0", "knative_serving": "1.18.0"}


def isvc(**extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {
            "name": "llama-8b",
            "namespace": "nexus",
            "annotations": {"serving.kserve.io/deploymentMode": "Serverless"},
        },
        "spec": {
            "predictor": {"model": {"runtime": "nexus-vllm", "modelFormat": {"name": "vLLM"}}},
            "transformer": {"containers": [{"name": "kserve-container", "image": "t:1"}]},
        },
    }
    doc["spec"]["predictor"].update(extra)
    return doc


RUNTIME_HTTP = {
    "kind": "ServingRuntime",
    "metadata": {"name": "nexus-vllm"},
    "spec": {"containers": [{"name": "kserve-container", "ports": [{"name": "http"}]}]},
}


@pytest.mark.parametrize("name", ["", "h2c", "http1"])
def test_knative_accepts_its_three_port_names(name: str) -> None:
    assert admission.port_name_refusal(name, "ports") is None


def test_knative_refuses_a_runtime_port_named_http_with_its_own_message() -> None:
    refusals = admission.knative_refusals(isvc(), V021, runtimes={"nexus-vllm": RUNTIME_HTTP})
    assert len(refusals) == 1
    assert "Port name http is not allowed" in refusals[0]
    assert "ServingRuntime nexus-vllm" in refusals[0]


def test_timeout_above_the_maximum_is_refused_and_zero_means_default() -> None:
    refusals = admission.knative_refusals(isvc(timeout=1300), V021)
    assert refusals == ["predictor: expected 0 <= 1300 <= 600: spec.template.spec.timeoutSeconds"]
    assert admission.knative_refusals(isvc(timeout=600), V021) == []
    assert admission.knative_refusals(isvc(timeout=0), V021) == []
    assert (
        admission.knative_refusals(isvc(timeout=900), V021, max_revision_timeout_seconds=900) == []
    )


def test_effective_timeout_is_knatives_default_without_a_component_timeout() -> None:
    assert admission.component_timeout(isvc(), "predictor") is None
    assert admission.effective_timeout(isvc(), "predictor") == 300
    assert admission.effective_timeout(isvc(timeout=600), "predictor") == 600


def test_standard_mode_creates_no_knative_revision() -> None:
    doc = isvc(timeout=5000)
    doc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
    assert admission.knative_refusals(doc, V021) == []


def test_deployment_mode_rewritten_from_0_17_only() -> None:
    assert admission.deployment_mode(isvc(), V021) == "Knative"
    assert admission.deployment_mode(isvc(), V016) == "Serverless"
    defaulted = admission.kserve_defaults(isvc(), V021)
    assert defaulted["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"


def test_transformer_container_concurrency_becomes_workers_unless_given() -> None:
    doc = isvc()
    doc["spec"]["transformer"]["containerConcurrency"] = 4
    assert admission.transformer_args(doc)[-2:] == ["--workers", "4"]
    doc["spec"]["transformer"]["containers"][0]["args"] = ["--workers", "2"]
    args = admission.transformer_args(doc)
    assert args is not None
    assert args.count("--workers") == 1
    assert args[:2] == ["--workers", "2"]


def test_transformer_arguments_injected_unless_given() -> None:
    assert admission.transformer_args(isvc()) == [
        "--model_name",
        "llama-8b",
        "--predictor_host",
        "llama-8b-predictor.nexus",
        "--http_port",
        "8080",
    ]
    doc = isvc()
    doc["spec"]["transformer"]["containers"][0]["args"] = ["--model_name", "chat"]
    defaulted = admission.kserve_defaults(doc, V021)
    args = defaulted["spec"]["transformer"]["containers"][0]["args"]
    assert args[:2] == ["--model_name", "chat"]
    assert args.count("--model_name") == 1
    # The input is never mutated.
    assert doc["spec"]["transformer"]["containers"][0]["args"] == ["--model_name", "chat"]


def test_parse_version() -> None:
    assert admission.parse_version("v1.21.1") == (1, 21, 1)
    assert admission.parse_version("0.21.0-rc1") == (0, 21, 0)
    with pytest.raises(ValueError, match="not a version"):
        admission.parse_version("latest")
