"""Kustomizations must build: Argo CD renders them at sync time and stops on any error.

With kubectl present the rule runs ``kubectl kustomize`` (offline, exactly Argo CD's
renderer). Without it, it checks what it can: every referenced file or folder exists
and every referenced file parses as YAML.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding
from nexus.manifests.rules.appcontent import KUSTOMIZATION_FILES, built

_REFERENCE_LISTS = ("resources", "components", "bases", "patchesStrategicMerge", "crds")


def _references(data: Any) -> Iterator[tuple[str, str]]:
    for key in _REFERENCE_LISTS:
        for index, ref in enumerate(data.get(key) or []):
            if isinstance(ref, str):
                yield f"{key}[{index}]", ref
    for index, patch in enumerate(data.get("patches") or []):
        if isinstance(patch, dict) and isinstance(patch.get("path"), str):
            yield f"patches[{index}].path", patch["path"]


def _offline(doc: Document) -> Iterator[Finding]:
    base = doc.path.parent
    for field, ref in _references(doc.data):
        if "://" in ref or ref.startswith("github.com/"):
            continue
        target = (base / ref).resolve()
        if target.is_dir():
            if not any((target / name).is_file() for name in KUSTOMIZATION_FILES):
                yield doc.finding(
                    field,
                    "kustomize-build",
                    f"{ref!r} is a folder without a kustomization.yaml",
                    "add a kustomization.yaml there or list its files",
                )
        elif not target.is_file():
            yield doc.finding(
                field, "kustomize-build", f"{ref!r} does not exist", "fix the path or add the file"
            )
        else:
            try:
                list(yaml.safe_load_all(target.read_text(encoding="utf-8")))
            except (OSError, yaml.YAMLError) as exc:
                yield doc.finding(
                    field, "kustomize-build", f"{ref!r} does not parse: {exc}", "fix its YAML"
                )


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        if doc.kind not in ("Kustomization", "Component"):
            continue
        if doc.path.name not in KUSTOMIZATION_FILES:
            continue
        # A Component builds only inside a kustomization that lists it (kustomize refuses
        # one as the root), so its references are checked as files; the overlays that use
        # it are built whole below.
        if ctx.kubectl is None or doc.kind == "Component":
            findings.extend(_offline(doc))
            continue
        objects, error = built(doc.path.parent, ctx.kubectl, ctx)
        if objects is None:
            findings.append(
                doc.finding(
                    "",
                    "kustomize-build",
                    f"`kubectl kustomize {Path(doc.display).parent}` fails: {error}",
                    "fix the kustomization (a missing file, a patch without target, ...)",
                )
            )
    return findings
