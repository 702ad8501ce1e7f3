"""Plain data <-> ``kserve`` SDK model objects, and deterministic YAML.

The SDK's own ``ApiClient`` serializes models but cannot deserialize the Kubernetes types
they embed (``V1Container`` lives in ``kubernetes.client``), so ``from_dict`` resolves class
names in both packages. ``from_dict`` refuses unknown fields: a document that does not
survive ``to_dict(from_dict(doc)) == doc`` uses a field the SDK (and so KServe) does not know.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

import kserve
import kubernetes.client
import yaml

_LIST = re.compile(r"^list\[(.*)\]$")
_DICT = re.compile(r"^dict\(([^,]*), (.*)\)$")
_PRIMITIVES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
# Keys that lead a mapping, in this order; all other keys follow sorted by name.
_LEADING_KEYS = ("apiVersion", "kind", "metadata", "name", "namespace", "spec")


class CodecError(ValueError):
    """A document does not fit the SDK model it is read as."""


def _model_class(name: str) -> Any:
    """The generated model class called ``name`` (kserve first), or None."""
    for module in (kserve, kubernetes.client):
        klass = getattr(module, name, None)
        if isinstance(klass, type) and hasattr(klass, "openapi_types"):
            return klass
    return None


def from_dict(data: Any, klass: str, *, path: str = "") -> Any:
    """Build the SDK object named ``klass`` (an OpenAPI type string) from plain data."""
    if data is None:
        return None
    match = _LIST.match(klass)
    if match:
        if not isinstance(data, list):
            raise CodecError(f"{path or '<root>'}: expected a list")
        return [from_dict(item, match.group(1), path=f"{path}[{i}]") for i, item in enumerate(data)]
    match = _DICT.match(klass)
    if match:
        if not isinstance(data, dict):
            raise CodecError(f"{path or '<root>'}: expected a mapping")
        return {k: from_dict(v, match.group(2), path=f"{path}.{k}") for k, v in data.items()}
    if klass in _PRIMITIVES or klass == "object":
        return data
    model = _model_class(klass)
    if model is None:
        # Types such as ResourceQuantity are strings or numbers on the wire.
        return data
    if not isinstance(data, dict):
        raise CodecError(f"{path or '<root>'}: expected a mapping for {klass}")
    by_json = {json_key: attr for attr, json_key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(by_json))
    if unknown:
        raise CodecError(f"{path or '<root>'}: {klass} has no field(s) {unknown}")
    kwargs = {
        by_json[key]: from_dict(value, model.openapi_types[by_json[key]], path=f"{path}.{key}")
        for key, value in data.items()
    }
    try:
        obj = model(**kwargs)
        # Some SDK classes default fields to "" (ModelSpec.name); absent must stay absent.
        for attr in model.openapi_types:
            if attr not in kwargs and getattr(obj, attr) is not None:
                setattr(obj, attr, None)
    except ValueError as exc:
        raise CodecError(f"{path or '<root>'}: {klass}: {exc}") from exc
    return obj


def to_dict(obj: Any) -> Any:
    """Plain data of an SDK object, leaving out unset (``None``) fields."""
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if isinstance(obj, list | tuple):
        return [to_dict(item) for item in obj]
    if isinstance(obj, datetime.datetime | datetime.date):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return {key: to_dict(value) for key, value in obj.items()}
    return {
        obj.attribute_map[attr]: to_dict(getattr(obj, attr))
        for attr in obj.openapi_types
        if getattr(obj, attr) is not None
    }


def ordered(data: Any) -> Any:
    """The same data with a stable, readable key order at every level."""
    if isinstance(data, list):
        return [ordered(item) for item in data]
    if not isinstance(data, dict):
        return data
    leading = [key for key in _LEADING_KEYS if key in data]
    rest = sorted(key for key in data if key not in _LEADING_KEYS)
    return {key: ordered(data[key]) for key in [*leading, *rest]}


class _IndentedDumper(yaml.SafeDumper):
    """Indents list items under their key, the way the hand-written manifests do."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(documents: list[Any], *, header: str = "") -> str:
    """Deterministic multi-document YAML: ordered keys, no timestamps, no aliases."""
    parts = [
        yaml.dump(
            ordered(doc),
            Dumper=_IndentedDumper,
            sort_keys=False,
            default_flow_style=False,
            allow_unicode=True,
            width=1000,
        )
        for doc in documents
    ]
    return header + "---\n".join(parts)
