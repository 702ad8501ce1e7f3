"""Each linter rule fires on its failing fixture, at the right field, and only there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nexus.manifests.findings import Finding
from nexus.manifests.lint import LintOptions, lint_paths
from nexus.manifests.schema import SchemaRegistry
from tests.manifests.conftest import FIXTURES, REPO_ROOT

ARGO_REPO = FIXTURES / "argocd-repo"
WAVE_FIELD = "metadata.annotations.argocd.argoproj.io/sync-wave"


def lint(
    target: Path, schemas: SchemaRegistry, *, repo: Path | None = None, kubectl: bool = True
) -> list[Finding]:
    """Lint a fixture on its own (pools from the real repo), or as its own repository."""
    if repo is None:
        options = LintOptions(repo_root=REPO_ROOT, isolated=True, use_kubectl=kubectl)
    else:
        options = LintOptions(repo_root=repo, use_kubectl=kubectl)
    return lint_paths([target], schemas=schemas, options=options)


CASES = [
    ("schema/isvc-unknown-field.yaml", "schema", "spec.predictor", "canaryTraficPercent"),
    ("schema/deployment-invalid.yaml", "schema", "spec.replicas", "'two'"),
    ("schema/unknown-kind.yaml", "schema-unknown", "", "NOT validated"),
    ("schema/not-a-manifest.yaml", "not-a-manifest", "", "apiVersion/kind"),
    ("schema/broken.yaml", "yaml-parse", "", "cannot parse"),
    (
        "isvc/canary-raw.yaml",
        "canary-needs-serverless",
        "spec.predictor.canaryTrafficPercent",
        "RawDeployment",
    ),
    ("isvc/vllm-no-gpu.yaml", "vllm-needs-gpu", "spec.predictor", "no GPU limit"),
    (
        "isvc/pool-no-toleration.yaml",
        "pool-toleration",
        "spec.predictor.tolerations",
        "nexus.dev/pool=h100",
    ),
    (
        "isvc/serverless-no-flags.yaml",
        "knative-podspec-flags",
        "spec.predictor.nodeSelector",
        "config-features",
    ),
    ("graph/no-root.yaml", "graph-root", "spec.nodes", "'root'"),
    # Issue 20: the shipped model cache before the fix, on tainted pools, at the wrong path.
    (
        "model-cache/nodegroup.yaml",
        "model-cache-tainted-pool",
        "spec.persistentVolumeSpec.nodeAffinity",
        "nvidia.com/gpu=present:NoSchedule",
    ),
    (
        "model-cache/nodegroup.yaml",
        "model-cache-path",
        "spec.persistentVolumeSpec.local.path",
        "'/models'",
    ),
    ("model-cache/cache.yaml", "model-cache-tainted-pool", "spec.nodeGroups[0]", "'a100'"),
    # Issue 20: the shipped authorization component before the fix refused plain scrapes.
    (
        "istio/authorizationpolicy.yaml",
        "authz-metrics-mtls",
        "spec.rules[2].from[0].source.namespaces",
        "without an Istio sidecar gets 403",
    ),
    (
        "graph/public.yaml",
        "graph-cluster-local",
        "metadata.labels.networking.knative.dev/visibility",
        "public route",
    ),
    (
        "graph/two-targets.yaml",
        "graph-step-target",
        "spec.nodes.root.steps[0]",
        "serviceUrl, nodeName",
    ),
    (
        "graph/dangling.yaml",
        "graph-dangling-node",
        "spec.nodes.root.steps[0].nodeName",
        "'missing'",
    ),
    ("graph/cycle.yaml", "graph-cycle", "spec.nodes.a", "a -> b -> a"),
    ("graph/weights.yaml", "graph-splitter-weights", "spec.nodes.root.steps", "[80, 10]"),
    (
        "graph/service-name.yaml",
        "graph-openai-needs-url",
        "spec.nodes.root.steps[0].serviceName",
        ":predict",
    ),
    (
        "graph/unknown-url.yaml",
        "graph-unknown-service",
        "spec.nodes.root.steps[0].serviceUrl",
        "'ghost'",
    ),
    ("graph/headers.yaml", "graph-propagate-credentials", "spec.nodes.root.steps[0]", "X-Api-Key"),
    ("secrets/secret-data.yaml", "literal-secret", "stringData.password", "Secret value"),
    ("secrets/env-value.yaml", "literal-secret", "data.GATEWAY_API_KEYS", "clear text"),
    (
        "secrets/env-value.yaml",
        "literal-secret",
        "spec.template.spec.containers[0].env[0].value",
        "HF_TOKEN",
    ),
    (
        "secrets/env-value.yaml",
        "literal-secret",
        "spec.template.spec.containers[0].env[1].value",
        "password in a URL",
    ),
    (
        "secrets/token-anywhere.yaml",
        "literal-secret",
        "metadata.annotations.note",
        "Hugging Face token",
    ),
    ("kustomize-broken", "kustomize-build", "", "missing.yaml"),
]


@pytest.mark.parametrize(("fixture", "rule", "field", "says"), CASES)
def test_rule_fires_on_its_fixture(
    schemas: SchemaRegistry, fixture: str, rule: str, field: str, says: str
) -> None:
    if rule == "kustomize-build" and shutil.which("kubectl") is None:
        pytest.skip("kubectl missing; the offline check has its own test below")
    target = FIXTURES / fixture
    context = target.parent if target.is_file() else target
    findings = lint(context, schemas)
    hits = [
        f
        for f in findings
        if f.rule == rule
        and f.field == field
        and Path(f.path).name in (target.name, "kustomization.yaml")
    ]
    assert len(hits) == 1, [f.text() for f in findings]
    assert says in hits[0].message
    assert hits[0].fix


def test_graph_fixtures_raise_nothing_else(schemas: SchemaRegistry) -> None:
    # Every finding of the graph folder is one the table above expects.
    expected = {(f, r) for f, r, _, _ in CASES if f.startswith("graph/")}
    # serviceName also reaches chat's transformer, so the credentials finding is right too.
    expected.add(("graph/service-name.yaml", "graph-propagate-credentials"))
    # The folder's platform propagates no credentials, so the public graph hits that too.
    expected.add(("graph/public.yaml", "graph-propagate-credentials"))
    found = {(f"graph/{Path(f.path).name}", f.rule) for f in lint(FIXTURES / "graph", schemas)}
    assert found == expected


def test_a_correct_graph_passes(schemas: SchemaRegistry) -> None:
    assert lint(FIXTURES / "graph-ok", schemas) == []


def test_model_cache_fixtures_raise_nothing_else(schemas: SchemaRegistry) -> None:
    expected = {(f, r) for f, r, _, _ in CASES if f.startswith("model-cache/")}
    found = {(f"model-cache/{Path(f.path).name}", f.rule)
             for f in lint(FIXTURES / "model-cache", schemas)}  # fmt: skip
    assert found == expected


def test_a_model_cache_on_an_untainted_pool_at_the_agents_path_passes(
    schemas: SchemaRegistry,
) -> None:
    assert lint(FIXTURES / "model-cache-ok", schemas) == []


def test_kustomize_rule_without_kubectl_checks_referenced_files(schemas: SchemaRegistry) -> None:
    findings = lint(FIXTURES / "kustomize-broken", schemas, kubectl=False)
    assert [(f.rule, f.field) for f in findings] == [("kustomize-build", "resources[1]")]


def test_secret_name_heuristic_keeps_token_budgets_apart() -> None:
    from nexus.manifests.rules.secrets import secret_name

    assert secret_name("GATEWAY_API_KEYS")
    assert secret_name("HF_TOKEN")
    assert secret_name("db-password")
    assert not secret_name("GATEWAY_TOKENS_PER_MINUTE")
    assert not secret_name("GATEWAY_JWT_PUBLIC_KEY")


ARGO_CASES = [
    ("argocd/graphs.yaml", "argocd-sync-order", WAVE_FIELD, "wave 1"),
    ("argocd/graphs.yaml", "argocd-project-kind", "spec.project", "InferenceGraph"),
    ("argocd/isvcs.yaml", "argocd-project-destination", "spec.destination", "'other'"),
    ("argocd/foreign-repo.yaml", "argocd-project-repo", "spec.source.repoURL", "fork.git"),
    ("argocd/foreign-repo.yaml", "argocd-project-destination", "spec.destination", "'other'"),
    ("argocd/missing-path.yaml", "argocd-app-path", "spec.source.path", "does/not/exist"),
    ("argocd/runtimes.yaml", "argocd-project-missing", "spec.project", "'nowhere'"),
    ("argocd/runtimes.yaml", "argocd-unpinned-revision", "spec.source.targetRevision", "HEAD"),
    ("runtimes/runtimes.yaml", "argocd-sync-order", WAVE_FIELD, "ServingRuntime 'rt'"),
]


def test_argocd_rules_fire_on_the_fixture_repository(schemas: SchemaRegistry) -> None:
    findings = lint(ARGO_REPO, schemas, repo=ARGO_REPO)
    got = {(f.path, f.rule, f.field) for f in findings}
    assert got == {(path, rule, field) for path, rule, field, _ in ARGO_CASES}
    for path, rule, field, says in ARGO_CASES:
        hits = [f for f in findings if (f.path, f.rule, f.field) == (path, rule, field)]
        assert any(says in hit.message for hit in hits), [h.message for h in hits]
