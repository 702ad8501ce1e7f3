"""What a cluster must provide before Argo CD syncs, read from ``platform/prerequisites.yaml``.

One file lists the namespaces, CRDs, hand-made Secrets, node labels and outside Services
(Prometheus, MLflow, Git) that the tree relies on but does not create. ``nexus lint``'s
rehearsal (``nexus.manifests.rehearsal``) counts them as present before the first sync
wave; ``docs/cluster.md`` gives the command that makes each. Versions stay in
``platform/versions.yaml`` and node pools in ``platform/pools.yaml``: this file refers to
them, never repeats them. The format is fixed in the issue-20 contract (namespaces, crds,
secrets, nodeLabels, services).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from nexus.errors import ConfigError

PREREQUISITES_FILE: Final = "platform/prerequisites.yaml"
SERVICE_ROLES: Final = frozenset({"prometheus", "mlflow", "git", "other"})


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Mapping[str, str]
    created_by: str


@dataclass(frozen=True, slots=True)
class RequiredCrds:
    group: str
    kinds: tuple[str, ...]
    installed_by: str


@dataclass(frozen=True, slots=True)
class RequiredSecret:
    name: str
    namespace: str
    type: str
    keys: tuple[str, ...]
    create: str
    check: str


@dataclass(frozen=True, slots=True)
class NodeLabels:
    pool: str
    labels: Mapping[str, str]
    command: str


@dataclass(frozen=True, slots=True)
class ExternalService:
    name: str
    namespace: str
    port: int
    role: str
    pod_labels: Mapping[str, str]
    sidecar: bool
    selects: Mapping[str, str]
    install: str
    check: str


class _Reader:
    """Typed access to one entry, raising ``ConfigError`` that names file and field."""

    def __init__(self, path: Path, where: str, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: {where} must be a mapping")
        self.path, self.where, self.raw = path, where, raw

    def fail(self, key: str, what: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self.where}.{key} {what}")

    def text(self, key: str, *, required: bool = True, default: str = "") -> str:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is required")
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(key, "must be a non-empty string")
        return value

    def labels(self, key: str) -> dict[str, str]:
        value = self.raw.get(key) or {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.fail(key, "must map label names to strings")
        return dict(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.raw.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(key, "must be a non-empty list of strings")
        return tuple(value)


def _entries(path: Path, data: Mapping[str, Any], key: str) -> list[_Reader]:
    raw = data.get(key)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{path}: {key} must be a list")
    return [_Reader(path, f"{key}[{index}]", entry) for index, entry in enumerate(raw)]


def _service(entry: _Reader) -> ExternalService:
    port = entry.raw.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise entry.fail("port", "must be a port number (1-65535)")
    role = entry.text("role")
    if role not in SERVICE_ROLES:
        raise entry.fail("role", f"must be one of {', '.join(sorted(SERVICE_ROLES))}")
    sidecar = entry.raw.get("sidecar", False)
    if not isinstance(sidecar, bool):
        raise entry.fail("sidecar", "must be true or false")
    return ExternalService(
        name=entry.text("name"),
        namespace=entry.text("namespace"),
        port=port,
        role=role,
        pod_labels=entry.labels("podLabels"),
        sidecar=sidecar,
        selects=entry.labels("selects"),
        install=entry.text("install"),
        check=entry.text("check"),
    )


@dataclass(frozen=True, slots=True)
class Prerequisites:
    """Everything of ``platform/prerequisites.yaml``, validated."""

    namespaces: tuple[Namespace, ...]
    crds: tuple[RequiredCrds, ...]
    secrets: tuple[RequiredSecret, ...]
    node_labels: tuple[NodeLabels, ...]
    services: tuple[ExternalService, ...]

    @classmethod
    def load(cls, path: Path) -> Prerequisites:
        """Read and validate the file; ``ConfigError`` naming the file and field."""
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read prerequisites file {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with namespaces, crds, secrets, ...")
        unknown = set(data) - {"namespaces", "crds", "secrets", "nodeLabels", "services"}
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown))}")
        return cls(
            namespaces=tuple(
                Namespace(e.text("name"), e.labels("labels"), e.text("createdBy"))
                for e in _entries(path, data, "namespaces")
            ),
            crds=tuple(
                RequiredCrds(e.text("group"), e.strings("kinds"), e.text("installedBy"))
                for e in _entries(path, data, "crds")
            ),
            secrets=tuple(
                RequiredSecret(
                    name=e.text("name"),
                    namespace=e.text("namespace"),
                    type=e.text("type", required=False, default="Opaque"),
                    keys=e.strings("keys"),
                    create=e.text("create"),
                    check=e.text("check"),
                )
                for e in _entries(path, data, "secrets")
            ),
            node_labels=tuple(
                NodeLabels(e.text("pool"), e.labels("labels"), e.text("command"))
                for e in _entries(path, data, "nodeLabels")
            ),
            services=tuple(_service(e) for e in _entries(path, data, "services")),
        )

    def namespace(self, name: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.name == name), None)

    def secret(self, namespace: str, name: str) -> RequiredSecret | None:
        return next((s for s in self.secrets if s.namespace == namespace and s.name == name), None)

    def pool_labels(self, pool: str) -> dict[str, str]:
        """The labels people put on the nodes of ``pool`` (merged over every entry)."""
        merged: dict[str, str] = {}
        for entry in self.node_labels:
            if entry.pool == pool:
                merged.update(entry.labels)
        return merged

    def of_role(self, role: str) -> tuple[ExternalService, ...]:
        return tuple(s for s in self.services if s.role == role)
