"""The CRD schemas ``nexus lint`` ships: compact structural schemas, tagged with their source.

Validation needs only the structure of a CRD's ``openAPIV3Schema``: types, ``required``,
``enum``, patterns, ``x-kubernetes-*`` markers, ``additionalProperties``. ``generate`` keeps
that of every served version and drops ``description``/``example`` text (Argo CD's
Application CRD has about 1,300 descriptions). Stored as compact JSON, the 24 kinds
take 1.7 MB, against 7.4 MB of CRD YAML. A plain clone or an installed wheel can then
validate custom resources without any CRD folder beside it.

Every bundle records where its schemas came from (``--source GROUP=LABEL``, e.g. the KServe
commit), and ``nexus lint`` prints it, so a finding can be traced to the CRD it was checked
against. ``nexus lint --crds DIR`` still reads a cluster's own CRDs instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from nexus.errors import ConfigError
from nexus.manifests.documents import yaml_files

INDEX = "index.json"
# Prose only: nothing a validator reads. Everything else of the schema is kept as it is.
_PROSE = frozenset({"description", "example", "externalDocs"})
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def compact(node: Any) -> Any:
    """The structural schema of ``node`` without its prose (descriptions, examples)."""
    if isinstance(node, list):
        return [compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _PROSE:
            continue
        if key == "properties":
            # Property names are data ("description" can be a field name): convert values only.
            out[key] = {name: compact(sub) for name, sub in value.items()}
        else:
            out[key] = compact(value)
    return out


def iter_crds(file: Path) -> Iterator[Mapping[str, Any]]:
    """The CRDs of one YAML file: CRD documents, and ``kubectl get crd -o yaml`` Lists."""
    for doc in yaml.load_all(file.read_text(encoding="utf-8"), Loader=_Loader):
        if not isinstance(doc, dict):
            continue
        items = doc.get("items") if doc.get("kind") == "List" else [doc]
        for item in items or []:
            if isinstance(item, dict) and item.get("kind") == "CustomResourceDefinition":
                yield item


def served_schemas(crd: Mapping[str, Any]) -> dict[str, Any]:
    """``{version: openAPIV3Schema}`` of every served version of one CRD."""
    spec = crd.get("spec", {})
    return {
        str(version["name"]): version["schema"]["openAPIV3Schema"]
        for version in spec.get("versions", [])
        if version.get("served", True) and (version.get("schema") or {}).get("openAPIV3Schema")
    }


def _dump(data: Any) -> str:
    # Sorted keys, one line per file: regeneration is byte-for-byte reproducible.
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"


def generate(crds_dir: Path, sources: Mapping[str, str]) -> dict[str, str]:
    """The bundle's files (name → text) for the CRDs under ``crds_dir``.

    ``sources`` maps an API group to the label of where its CRDs came from; a CRD whose
    group has no label is refused, so that no schema is shipped without its origin.
    """
    if not crds_dir.is_dir():
        raise ConfigError(f"{crds_dir} is not a directory of CRD YAML")
    files: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for path in yaml_files(crds_dir):
        for crd in iter_crds(path):
            spec = crd.get("spec", {})
            group, kind = str(spec.get("group", "")), str(spec.get("names", {}).get("kind", ""))
            plural = str(spec.get("names", {}).get("plural", kind.lower()))
            if group not in sources:
                raise ConfigError(
                    f"{path}: no source for API group {group!r}; "
                    f"pass --source {group}=LABEL (e.g. the release or commit the CRD is from)"
                )
            name = f"{group}_{plural}.json"
            versions = {v: compact(s) for v, s in served_schemas(crd).items()}
            files[name] = _dump({"group": group, "kind": kind, "versions": versions})
            kinds[f"{group}/{kind}"] = name
    if not kinds:
        raise ConfigError(f"no CustomResourceDefinition found under {crds_dir}")
    used = {key.partition("/")[0] for key in kinds}
    files[INDEX] = _dump({"sources": {g: sources[g] for g in sorted(used)}, "kinds": kinds})
    return files


def write(files: Mapping[str, str], out_dir: Path) -> None:
    """Replace the bundle in ``out_dir`` by ``files`` (stale schemas are removed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.json"):
        if old.name not in files:
            old.unlink()
    for name, text in files.items():
        (out_dir / name).write_text(text, encoding="utf-8")


def read(out_dir: Path) -> dict[str, str]:
    """The bundle files of ``out_dir`` (name → text), for comparing with ``generate``."""
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(out_dir.glob("*.json"))}


def packaged_dir() -> Path:
    """Where the shipped bundle lives: ``nexus/manifests/schemas`` in the installed package."""
    return Path(str(resources.files("nexus.manifests") / "schemas"))


@dataclass(frozen=True, slots=True)
class Bundle:
    """A generated bundle on disk: which kinds it holds and where they came from."""

    directory: Path
    sources: Mapping[str, str]
    kinds: Mapping[tuple[str, str], str]

    @classmethod
    def load(cls, directory: Path | None = None) -> Bundle:
        directory = directory or packaged_dir()
        index = json.loads((directory / INDEX).read_text(encoding="utf-8"))
        kinds = {(k.partition("/")[0], k.partition("/")[2]): n for k, n in index["kinds"].items()}
        return cls(directory, dict(index["sources"]), kinds)

    def schemas(self, group: str, kind: str) -> dict[str, Any]:
        """``{version: structural schema}`` of one kind (empty when the bundle lacks it)."""
        name = self.kinds.get((group, kind))
        if name is None:
            return {}
        data = json.loads((self.directory / name).read_text(encoding="utf-8"))
        return dict(data["versions"])

    def describe(self) -> str:
        """One line for people: ``bundled schemas (serving.kserve.io: KServe ..., ...)``."""
        labels = ", ".join(f"{group}: {label}" for group, label in sorted(self.sources.items()))
        return f"bundled schemas ({labels})"
