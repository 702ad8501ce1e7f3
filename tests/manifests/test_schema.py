"""CRD schema conversion: structural schemas become strict, int-or-string stays permissive."""

from __future__ import annotations

from pathlib import Path

import jsonschema

from nexus.manifests.documents import Document
from nexus.manifests.schema import SchemaRegistry, crd_to_json_schema

CRD_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "note": {"type": "string", "nullable": True},
            },
        }
    },
}


def _errors(instance: object) -> list[str]:
    validator = jsonschema.Draft4Validator(crd_to_json_schema(CRD_SCHEMA))
    return [e.message for e in validator.iter_errors(instance)]


def test_unknown_fields_are_errors_where_the_schema_is_structural() -> None:
    assert _errors({"spec": {"prot": 1}}) == [
        "Additional properties are not allowed ('prot' was unexpected)"
    ]


def test_preserve_unknown_fields_and_maps_stay_open() -> None:
    assert _errors({"spec": {"free": {"anything": 1}, "labels": {"a": "b"}}}) == []


def test_int_or_string_and_nullable() -> None:
    assert _errors({"spec": {"port": 8080, "note": None}}) == []
    assert _errors({"spec": {"port": "http"}}) == []
    assert _errors({"spec": {"port": 1.5}}) != []


def test_metadata_is_checked_too(schemas: SchemaRegistry) -> None:
    doc = Document(
        Path("x.yaml"),
        0,
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "InferenceGraph",
            "metadata": {"name": "Bad_Name", "labels": {"a": 1}},
            "spec": {"nodes": {"root": {"routerType": "Sequence", "steps": []}}},
        },
        "x.yaml",
    )
    fields = sorted(f.field for f in schemas.validate(doc))
    assert fields == ["metadata.labels.a", "metadata.name"]
