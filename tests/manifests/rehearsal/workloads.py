"""Small manifests the rehearsal tests plant."""

from __future__ import annotations

from typing import Any

from nexus.manifests.pools import load_pools
from tests.manifests.rehearsal.conftest import Tree


def deployment(name: str, wave: int | None = None, **pod: Any) -> dict[str, Any]:
    """A one-container Deployment; ``pod`` fields go into its pod spec."""
    container = {"name": "app", "image": "busybox:1.36", **pod.pop("container", {})}
    meta: dict[str, Any] = {"name": name}
    if wave is not None:
        meta["annotations"] = {"argocd.argoproj.io/sync-wave": str(wave)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container], **pod},
            },
        },
    }


def placed_on(tree: Tree, pool: str) -> dict[str, Any]:
    """The nodeSelector and tolerations of a pool of the copy's pools.yaml."""
    found = load_pools(tree.root / "platform" / "pools.yaml")[pool]
    return {
        "nodeSelector": dict(found.node_selector),
        "tolerations": [t.toleration() for t in found.taints],
    }


def small_pool(tree: Tree) -> str:
    """An untainted pool (where the platform's own pods run)."""
    pools = load_pools(tree.root / "platform" / "pools.yaml")
    return next(name for name, pool in pools.items() if not pool.taints)


def gpu_pool(tree: Tree) -> str:
    pools = load_pools(tree.root / "platform" / "pools.yaml")
    return next(name for name, pool in pools.items() if pool.accelerator)
