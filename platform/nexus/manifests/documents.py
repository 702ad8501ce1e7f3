"""Reading YAML manifests into ``Document``s that remember their file and position.

A file that does not parse, or a document that is not a Kubernetes object, becomes a
finding rather than an exception, so one broken file never hides the rest of the report.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nexus.manifests.findings import Finding

YAML_SUFFIXES = (".yaml", ".yml")
KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml")
YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document of one manifest file."""

    path: Path
    index: int
    data: Mapping[str, Any]
    display: str

    @property
    def api_version(self) -> str:
        return str(self.data.get("apiVersion", ""))

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def metadata(self) -> Mapping[str, Any]:
        meta = self.data.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return str(ns) if ns else None

    @property
    def annotations(self) -> Mapping[str, str]:
        ann = self.metadata.get("annotations")
        return ann if isinstance(ann, dict) else {}

    @property
    def spec(self) -> Mapping[str, Any]:
        spec = self.data.get("spec")
        return spec if isinstance(spec, dict) else {}

    def finding(
        self, field: str, rule: str, message: str, fix: str, *, warning: bool = False
    ) -> Finding:
        return Finding(
            path=self.display,
            document=self.index,
            field=field,
            rule=rule,
            message=message,
            fix=fix,
            severity="warning" if warning else "error",
        )


def yaml_files(path: Path) -> Iterator[Path]:
    """The YAML files at ``path`` (itself, or below it), sorted, hidden ones skipped."""
    if path.is_file():
        yield path
        return
    for candidate in sorted(path.rglob("*")):
        relative = candidate.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if candidate.is_file() and candidate.suffix in YAML_SUFFIXES:
            yield candidate


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(path)


def load_file(path: Path, *, root: Path | None = None) -> tuple[list[Document], list[Finding]]:
    """Every non-empty document of one file, plus findings for what cannot be read."""
    display = _display(path, root)
    try:
        raw_docs = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=YAML_LOADER))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return [], [
            Finding(display, 0, "", "yaml-parse", f"cannot parse: {exc}", "fix the YAML syntax")
        ]
    docs: list[Document] = []
    findings: list[Finding] = []
    for index, data in enumerate(raw_docs):
        if data is None:
            continue
        if isinstance(data, dict) and path.name in KUSTOMIZATION_NAMES:
            # kustomize accepts a kustomization.yaml without apiVersion/kind.
            data = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                **data,
            }
        if not isinstance(data, dict) or not data.get("apiVersion") or not data.get("kind"):
            findings.append(
                Finding(
                    display,
                    index,
                    "",
                    "not-a-manifest",
                    "document has no apiVersion/kind, so nothing can validate it",
                    "keep only Kubernetes objects in manifest folders; move other YAML "
                    "(test data, tool configuration) elsewhere",
                )
            )
            continue
        docs.append(Document(path=path, index=index, data=data, display=display))
    return docs, findings


def load_paths(
    paths: Iterable[Path], *, root: Path | None = None
) -> tuple[list[Document], list[Finding]]:
    docs: list[Document] = []
    findings: list[Finding] = []
    seen: set[Path] = set()
    for path in paths:
        for file in yaml_files(path):
            resolved = file.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            file_docs, file_findings = load_file(file, root=root)
            docs.extend(file_docs)
            findings.extend(file_findings)
    return docs, findings
