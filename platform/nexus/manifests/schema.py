"""Schema validation: custom resources against their CRDs, core kinds via kubernetes-validate.

A CRD's ``openAPIV3Schema`` is structural: the API server prunes (or, with strict field
validation, rejects) any field the schema does not declare unless a node says
``x-kubernetes-preserve-unknown-fields``. ``crd_to_json_schema`` turns that rule into
``additionalProperties: false`` so a misspelt field is an error here, not a silent no-op in
the cluster. A resource whose schema is in neither place is reported as a warning.

Without a CRD directory the registry reads the schemas the package ships
(``nexus.manifests.bundle``), generated from the same CRDs with their prose removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError

from nexus.manifests.bundle import Bundle, iter_crds, served_schemas
from nexus.manifests.documents import Document, yaml_files
from nexus.manifests.findings import Finding, field_path

DEFAULT_KUBE_VERSION = "1.33"
# CRD files are large (the InferenceService CRD is 2 MB); a cheap text scan finds which
# file defines which kind so that only the CRDs a lint run needs are parsed.
_CRD_GROUP = re.compile(r"^  group:\s*['\"]?([\w.-]+)", re.MULTILINE)
_CRD_KIND = re.compile(r"^  names:\n(?:    .*\n)*?    kind:\s*['\"]?(\w+)", re.MULTILINE)
# Kinds validated elsewhere: Kustomizations and Components are checked by building them
# (rules/kustomize.py); they are kustomize's input, never sent to a cluster.
_NOT_SCHEMA_CHECKED = frozenset(
    {("kustomize.config.k8s.io", "Kustomization"), ("kustomize.config.k8s.io", "Component")}
)

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
    },
}


def crd_to_json_schema(node: Any) -> Any:
    """Translate an OpenAPI v3 structural schema into a strict JSON Schema (draft 4)."""
    if isinstance(node, list):
        return [crd_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "description"):
            continue
        if key == "properties":
            # Property names are data, not schema keywords: convert each value only.
            out[key] = {name: crd_to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = crd_to_json_schema(value)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@dataclass
class SchemaRegistry:
    """CRD schemas of one directory (else the shipped bundle), converted on first use.

    Build once, pass around.
    """

    crds_dir: Path | None = None
    kube_version: str = DEFAULT_KUBE_VERSION
    bundle: Bundle | None = field(default=None, init=False)
    _raw: dict[tuple[str, str, str], Any] = field(default_factory=dict, init=False)
    _files: dict[tuple[str, str], list[Path]] = field(default_factory=dict, init=False)
    _parsed: set[Path] = field(default_factory=set, init=False)
    _bundled: set[tuple[str, str]] = field(default_factory=set, init=False)
    _validators: dict[tuple[str, str, str], jsonschema.Draft4Validator] = field(
        default_factory=dict, init=False
    )

    def __post_init__(self) -> None:
        if self.crds_dir is None:
            self.bundle = Bundle.load()
            return
        for file in yaml_files(self.crds_dir):
            text = file.read_text(encoding="utf-8")
            group, kind = _CRD_GROUP.search(text), _CRD_KIND.search(text)
            if group and kind and text.count("kind: CustomResourceDefinition") == 1:
                self._files.setdefault((group.group(1), kind.group(1)), []).append(file)
            else:
                self._parse(file)

    def _parse(self, file: Path) -> None:
        if file in self._parsed:
            return
        self._parsed.add(file)
        for crd in iter_crds(file):
            self._add(crd)

    def _add(self, crd: Mapping[str, Any]) -> None:
        spec = crd.get("spec", {})
        group, kind = spec.get("group", ""), spec.get("names", {}).get("kind", "")
        for version, schema in served_schemas(crd).items():
            self._raw[(group, version, kind)] = schema

    @property
    def source(self) -> str:
        """Where the schemas come from, for people: the directory or the bundle's origin."""
        return self.bundle.describe() if self.bundle is not None else str(self.crds_dir)

    def knows(self, group: str, kind: str) -> bool:
        """Whether the directory (or the bundle) has a CRD for this kind (any version)."""
        if self.bundle is not None:
            return (group, kind) in self.bundle.kinds
        return (group, kind) in self._files or any((g, k) == (group, kind) for g, _, k in self._raw)

    def _load(self, group: str, kind: str) -> None:
        if self.bundle is not None and (group, kind) not in self._bundled:
            self._bundled.add((group, kind))
            for version, schema in self.bundle.schemas(group, kind).items():
                self._raw.setdefault((group, version, kind), schema)
        for file in self._files.get((group, kind), []):
            self._parse(file)

    def _validator(self, key: tuple[str, str, str]) -> jsonschema.Draft4Validator | None:
        if key not in self._validators:
            self._load(key[0], key[2])
        if key not in self._validators:
            raw = self._raw.get(key)
            if raw is None:
                return None
            schema = crd_to_json_schema(raw)
            # The API server adds apiVersion, kind and metadata to every custom resource's
            # schema; Istio's CRDs leave all three out, the others declare them.
            properties = schema.setdefault("properties", {})
            properties.update(apiVersion={"type": "string"}, kind={"type": "string"})
            properties["metadata"] = OBJECT_META
            schema["required"] = sorted({*schema.get("required", []), "metadata"})
            self._validators[key] = jsonschema.Draft4Validator(schema)
        return self._validators[key]

    def validate(self, doc: Document) -> list[Finding]:
        """Schema findings of one document (a warning when no schema is known)."""
        group, _, version = doc.api_version.rpartition("/")
        if (group, doc.kind) in _NOT_SCHEMA_CHECKED:
            return []
        validator = self._validator((group, version, doc.kind))
        if validator is not None:
            return [
                doc.finding(
                    field_path(error.absolute_path),
                    "schema",
                    f"{doc.kind} does not match its CRD: {error.message}",
                    "correct the field as the CRD describes it (kubectl explain "
                    f"{doc.kind.lower()}.{field_path(error.absolute_path) or 'spec'})",
                )
                for error in sorted(validator.iter_errors(dict(doc.data)), key=str)
            ]
        if "." in group and not group.endswith(".k8s.io"):
            # A custom resource group; kubernetes-validate would only guess by name.
            return [self._unknown(doc)]
        return self._validate_core(doc)

    def _validate_core(self, doc: Document) -> list[Finding]:
        try:
            kubernetes_validate.validate(dict(doc.data), self.kube_version, strict=True)
        except SchemaNotFoundError:
            return [self._unknown(doc)]
        except jsonschema.ValidationError as error:
            return [
                doc.finding(
                    field_path(error.absolute_path),
                    "schema",
                    f"{doc.kind} is not a valid Kubernetes {self.kube_version} object: "
                    f"{error.message}",
                    "correct the field per the Kubernetes API reference (kubectl explain)",
                )
            ]
        return []

    def _unknown(self, doc: Document) -> Finding:
        where = self.crds_dir or "the schemas shipped with Nexus"
        return doc.finding(
            "",
            "schema-unknown",
            f"no schema for {doc.api_version} {doc.kind} (looked in {where} and the "
            "Kubernetes core schemas); this document was NOT validated",
            "add the CRD of this kind to the --crds directory "
            f"(kubectl get crd -o yaml > <dir>/{doc.kind.lower()}.yaml)",
            warning=True,
        )


def validate_all(docs: Iterable[Document], registry: SchemaRegistry) -> list[Finding]:
    return [finding for doc in docs for finding in registry.validate(doc)]
