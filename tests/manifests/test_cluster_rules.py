"""The cluster rules (issue 9): each fires on its one-mistake fixture, and only there.

``fixtures/cluster/ok.yaml`` does everything right; every ``bad-*.yaml`` is that file with
one mistake. The upstream behaviour each rule encodes is cited in its module
(``rules/knative.py``, ``rules/serving.py``, ``rules/graph.py``). Pools and versions come
from the repository (``platform/pools.yaml``, ``platform/versions.yaml``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nexus.manifests.findings import Finding
from nexus.manifests.lint import LintOptions, lint_paths
from nexus.manifests.schema import SchemaRegistry
from tests.manifests.conftest import FIXTURES, REPO_ROOT

CLUSTER = FIXTURES / "cluster"

# fixture, rule, document, field, words the message must contain
CASES = [
    ("port-name", "knative-port-name", 0, "spec.containers[0].ports[0].name",
     "Port name http is not allowed"),
    ("port-name", "knative-port-name", 1, "spec.predictor.model.runtime", "runtime vllm-rt"),
    ("timeout-max", "knative-timeout", 1, "spec.predictor.timeout", "expected 0 <= 1300 <= 600"),
    ("timeout-unset", "knative-timeout", 3, "spec.timeout", "revision-timeout-seconds (300 s)"),
    ("router-timeouts", "router-timeouts", 3, "spec.routerTimeouts.serverWrite", "after 600 s"),
    ("storage-credentials", "storage-credentials", 1,
     "metadata.annotations.serving.kserve.io/storageSecretName", "storage initializer"),
    ("deployment-mode", "deployment-mode", 1,
     "metadata.annotations.serving.kserve.io/deploymentMode", "'Serverless' to 'Knative'"),
    ("gpu-fit", "gpu-fit", 1, "spec.predictor.model.resources.limits", "130.4 GiB"),
    ("tensor-parallel", "tensor-parallel", 1, "spec.predictor.model.args", "2 x 1 = 2"),
    ("dev-shm", "dev-shm", 1, "spec.predictor.model.volumeMounts", "/dev/shm"),
    ("predictor-host", "graph-predictor-host", 3, "spec.nodes.root.steps[0].serviceUrl",
     "predictor of 'big'"),
    ("path-prefix", "gateway-path-prefix", 2, "spec.transformer.containers[0].env[0]", "/openai"),
    ("vllm-args", "vllm-args", 0, "spec.containers[0].args[2]", "--disable-log-requests"),
    ("vllm-image", "vllm-image-version", 0, "spec.containers[0].image", "v0.10.2"),
    ("cluster-local", "cluster-local", 2,
     "metadata.labels.networking.knative.dev/visibility", "public hosts"),
    ("startup-budget", "startup-budget", 1,
     "spec.predictor.annotations.serving.knative.dev/progress-deadline", "900 s"),
]  # fmt: skip


def lint(target: Path, schemas: SchemaRegistry) -> list[Finding]:
    options = LintOptions(repo_root=REPO_ROOT, isolated=True, use_kubectl=False)
    return lint_paths([target], schemas=schemas, options=options)


def test_the_correct_fixture_passes(schemas: SchemaRegistry) -> None:
    assert [f.text() for f in lint(CLUSTER / "ok.yaml", schemas)] == []


@pytest.mark.parametrize(("fixture", "rule", "document", "field", "says"), CASES)
def test_rule_fires_on_its_mistake(
    schemas: SchemaRegistry, fixture: str, rule: str, document: int, field: str, says: str
) -> None:
    findings = lint(CLUSTER / f"bad-{fixture}.yaml", schemas)
    hits = [f for f in findings if (f.rule, f.document, f.field) == (rule, document, field)]
    assert len(hits) == 1, [f.text() for f in findings]
    assert hits[0].severity == "error"
    assert says in hits[0].message
    assert hits[0].fix


def test_each_mistake_raises_nothing_else(schemas: SchemaRegistry) -> None:
    expected: dict[str, set[str]] = {}
    for fixture, rule, *_ in CASES:
        expected.setdefault(fixture, set()).add(rule)
    for fixture, rules in expected.items():
        found = {f.rule for f in lint(CLUSTER / f"bad-{fixture}.yaml", schemas)}
        assert found == rules, fixture


def test_every_bad_fixture_is_in_the_table() -> None:
    files = {p.name.removeprefix("bad-").removesuffix(".yaml") for p in CLUSTER.glob("bad-*")}
    assert files == {fixture for fixture, *_ in CASES}
