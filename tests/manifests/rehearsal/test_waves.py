"""Waves: the first sync wave that would never turn Healthy is an error naming what it blocks."""

from __future__ import annotations

from collections.abc import Callable

from tests.manifests.rehearsal.conftest import Result, Tree
from tests.manifests.rehearsal.workloads import deployment

RULE = "rehearsal-waves"


def test_degraded_at_an_early_wave_blocks_the_rest(tree: Tree, lint: Callable[[], Result]) -> None:
    env = {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]}
    planted = deployment("nexus-planted", wave=-3, container=env)
    tree.add("platform/k8s/base", "planted.yaml", [planted])
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "Deployment nexus/nexus-planted")
    message = found["message"]
    assert "stops at Application nexus-platform (wave 0), resource wave -3" in message
    assert "Secret nexus/nope does not exist" in message
    for blocked in ("nexus-runtimes", "nexus-inference-services", "nexus-graphs"):
        assert f"Application {blocked}" in message
    # Only the first wave that stalls is reported.
    assert all("resource wave -3" in f["message"] for f in result.findings if f["rule"] == RULE)


def test_unschedulable_pod_stalls_its_wave(tree: Tree, lint: Callable[[], Result]) -> None:
    planted = deployment("nexus-planted", wave=-3, nodeSelector={"nexus.dev/pool": "nowhere"})
    tree.add("platform/k8s/base", "planted.yaml", [planted])
    result = lint()
    found = result.first(RULE, "Deployment nexus/nexus-planted")
    assert "no pool admits it" in found["message"]


def test_a_resource_without_health_check_does_not_stall(
    tree: Tree, lint: Callable[[], Result]
) -> None:
    # Argo CD has no health check for a ServiceAccount: a missing Secret it lists is an
    # error of its own, never a stalled wave.
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": "nexus-planted",
            "annotations": {"argocd.argoproj.io/sync-wave": "-3"},
        },
        "secrets": [{"name": "nexus-planted-missing"}],
    }
    tree.add("platform/k8s/base", "planted.yaml", [account])
    result = lint()
    assert result.naming("rehearsal-references", "nexus-planted-missing")
    assert not result.naming(RULE, "nexus-planted")


def test_without_application_health_the_waves_do_not_hold(
    tree: Tree, lint: Callable[[], Result]
) -> None:
    (tree.root / "argocd" / "argocd-cm.application-health.yaml").unlink()
    result = lint()
    assert result.code == 1
    found = result.first(RULE, "argocd/application.nexus-root.yaml")
    assert "every child Application's wave at once" in found["message"]
    assert "resource.customizations.health.argoproj.io_Application" in found["fix"]
