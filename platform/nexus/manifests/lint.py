"""``nexus lint``: validate manifests against schemas, then run the rules KServe cannot.

The checked documents are the given paths (default: the repository's manifest folders);
the context the rules see is the repository's manifest folders plus those paths, so a
graph checked on its own still knows which InferenceServices and platform settings exist.
Without paths, the whole tree's install is then rehearsed (``nexus.manifests.rehearsal``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nexus.errors import ConfigError
from nexus.manifests.context import MANIFEST_FOLDERS, LintContext, find_repo_root
from nexus.manifests.documents import load_paths
from nexus.manifests.findings import Finding
from nexus.manifests.rehearsal import rehearse
from nexus.manifests.rules import RULES, kustomize
from nexus.manifests.schema import SchemaRegistry, validate_all
from nexus.manifests.versions import VERSIONS_FILE

CRDS_ENV = "NEXUS_CRDS_DIR"


def default_crds_dir() -> Path | None:
    """``$NEXUS_CRDS_DIR`` when set; else None: the schemas shipped in the package."""
    env = os.environ.get(CRDS_ENV)
    return Path(env) if env else None


def default_paths(repo_root: Path) -> list[Path]:
    return [repo_root / folder for folder in MANIFEST_FOLDERS if (repo_root / folder).exists()]


@dataclass(frozen=True, slots=True)
class LintOptions:
    """How a run resolves its inputs; ``isolated`` limits the context to the paths."""

    repo_root: Path | None
    isolated: bool = False
    use_kubectl: bool = True
    # Play the whole tree's install after the per-file rules (``nexus lint`` without paths).
    rehearse: bool = False


def lint_paths(
    paths: Sequence[Path], *, schemas: SchemaRegistry, options: LintOptions
) -> list[Finding]:
    """Every finding for the documents under ``paths``."""
    root = options.repo_root
    docs, findings = load_paths(paths, root=root)
    missing = [p for p in paths if not p.exists()]
    findings += [
        Finding(str(p), 0, "", "path-missing", "path does not exist", "pass existing paths")
        for p in missing
    ]
    if options.isolated or root is None:
        context_docs = docs
    else:
        repo_docs, _ = load_paths(default_paths(root), root=root)
        linted = {(d.display, d.index) for d in docs}
        context_docs = docs + [d for d in repo_docs if (d.display, d.index) not in linted]
    ctx = LintContext.build(
        context_docs,
        repo_root=None if options.isolated else root,
        pools_file=root / "platform" / "pools.yaml" if root is not None else None,
        versions_file=root / VERSIONS_FILE if root is not None else None,
        use_kubectl=options.use_kubectl,
    )
    findings += validate_all(docs, schemas)
    findings += kustomize.check(docs, ctx)
    for rule in RULES:
        findings += rule(docs, ctx)
    if options.rehearse and not options.isolated:
        findings += rehearse(ctx)
    return sorted(set(findings))


def run(
    paths: Sequence[str], *, crds: str | None, isolated: bool = False
) -> tuple[list[Finding], str]:
    """What the CLI calls: resolve defaults, lint, return findings and the schemas' source."""
    root = find_repo_root(Path.cwd()) if not paths else find_repo_root(Path(paths[0]))
    crds_dir = Path(crds) if crds else default_crds_dir()
    if crds_dir is not None and not crds_dir.is_dir():
        raise ConfigError(f"--crds / ${CRDS_ENV}: {crds_dir} is not a directory")
    targets = [Path(p) for p in paths] if paths else default_paths(root or Path.cwd())
    schemas = SchemaRegistry(crds_dir)
    options = LintOptions(repo_root=root, isolated=isolated, rehearse=not paths)
    return lint_paths(targets, schemas=schemas, options=options), schemas.source
