"""What an Argo CD Application deploys, as the linter can know it without a cluster.

A Kustomize directory is built with ``kubectl kustomize`` (when kubectl is present); a
plain directory yields its YAML files (recursively only with ``directory.recurse``, as
Argo CD does). Applications whose source is not a path in this repository yield None.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from nexus.manifests.context import LintContext
from nexus.manifests.documents import YAML_LOADER, Document, load_file

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] ", re.MULTILINE)


def sources(app: Document) -> list[Mapping[str, Any]]:
    spec = app.spec
    found = [spec["source"]] if isinstance(spec.get("source"), dict) else []
    found += [s for s in spec.get("sources") or [] if isinstance(s, dict)]
    return found


def kustomization_file(directory: Path) -> Path | None:
    for name in KUSTOMIZATION_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def build_kustomization(directory: Path, kubectl: str) -> tuple[list[Any] | None, str]:
    """Objects of ``kubectl kustomize directory``, or None and the error text."""
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        # Drop klog's "E1126 04:59:58.925456 14872 run.go:72]" prefix from the message.
        text = _KLOG_PREFIX.sub("", result.stderr.strip() or result.stdout.strip())
        return None, text
    return [d for d in yaml.load_all(result.stdout, Loader=YAML_LOADER) if isinstance(d, dict)], ""


def built(directory: Path, kubectl: str, ctx: LintContext) -> tuple[list[Any] | None, str]:
    """``build_kustomization`` of ``directory``, once per lint run (kept in ``ctx``)."""
    key = str(directory.resolve())
    if key not in ctx.kustomize_builds:
        ctx.kustomize_builds[key] = build_kustomization(directory, kubectl)
    return ctx.kustomize_builds[key]


def app_content(app: Document, ctx: LintContext) -> list[Document] | None:
    """The documents an Application would sync, or None when it is not knowable here."""
    if ctx.repo_root is None:
        return None
    content: list[Document] = []
    for source in sources(app):
        path = source.get("path")
        if not isinstance(path, str) or source.get("chart"):
            continue
        directory = ctx.repo_root / path
        if not directory.is_dir():
            continue
        if kustomization_file(directory) is not None and ctx.kubectl:
            objects, _ = built(directory, ctx.kubectl, ctx)
            for index, data in enumerate(objects or []):
                content.append(Document(directory, index, data, f"{path} (kustomize build)"))
            continue
        recurse = bool((source.get("directory") or {}).get("recurse"))
        files = sorted(directory.rglob("*") if recurse else directory.glob("*"))
        for file in files:
            if file.is_file() and file.suffix in (".yaml", ".yml"):
                if file.name in KUSTOMIZATION_FILES:
                    continue
                docs, _ = load_file(file, root=ctx.repo_root)
                content.extend(docs)
    return content
