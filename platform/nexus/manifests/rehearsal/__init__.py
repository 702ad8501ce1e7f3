"""The install rehearsed over the whole tree, as a cluster would meet it (``nexus lint``).

Per-file rules cannot see what lives between files; this package plays the install:
``tree`` builds what Argo CD applies and when, ``pods`` the pods that causes, and one
module per class of mistake checks them: ``references``, ``scheduling``,
``reachability``, ``exposure``; ``waves`` then finds the first sync wave that would never
turn Healthy. Every rule module cites the upstream code it encodes.
"""

from __future__ import annotations

from pathlib import Path

from nexus.errors import ConfigError
from nexus.manifests.context import LintContext
from nexus.manifests.findings import Finding
from nexus.manifests.prerequisites import PREREQUISITES_FILE, Prerequisites
from nexus.manifests.rehearsal import (
    exposure,
    reachability,
    references,
    scheduling,
    waves,
)
from nexus.manifests.rehearsal.pods import pods_of
from nexus.manifests.rehearsal.tree import build_tree


def rehearse(ctx: LintContext) -> list[Finding]:
    """Every finding of the rehearsal of the repository at ``ctx.repo_root``."""
    if ctx.repo_root is None:
        return []
    path = ctx.repo_root / PREREQUISITES_FILE
    try:
        prerequisites = Prerequisites.load(path)
    except ConfigError as exc:
        return [
            Finding(
                PREREQUISITES_FILE,
                0,
                "",
                "rehearsal-prerequisites",
                str(exc).replace(str(Path(ctx.repo_root)) + "/", ""),
                "write the file in the format of nexus/manifests/prerequisites.py",
            )
        ]
    tree = build_tree(ctx, prerequisites)
    pods = pods_of(tree)
    problems = [
        *references.check(tree, pods),
        *scheduling.check(tree, pods),
        *reachability.check(tree, pods),
        *exposure.check(tree),
    ]
    return [
        *(p.finding() for p in problems),
        *waves.check(tree, problems),
        *scheduling.unchecked_capacity(tree),
    ]


__all__ = ["rehearse"]
