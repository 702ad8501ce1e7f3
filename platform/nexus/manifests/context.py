"""What the linter knows about the repository besides the files it was asked to check.

Cross-document rules need the whole platform: a graph's ``serviceUrl`` must name an
InferenceService the repository defines, node selectors need the Knative flags the
platform enables, Applications need their AppProject. ``LintContext`` holds those
documents (by default the repository's manifest folders plus the linted paths).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nexus.errors import ConfigError
from nexus.manifests import admission
from nexus.manifests.documents import Document
from nexus.manifests.pools import Pool, load_pools
from nexus.manifests.versions import VERSIONS_FILE, load_versions

MANIFEST_FOLDERS = ("platform/k8s", "inference_services", "graphs", "argocd")
KNATIVE_NODE_FLAGS = (
    "kubernetes.podspec-nodeselector",
    "kubernetes.podspec-tolerations",
    "kubernetes.podspec-affinity",
)
SERVERLESS_MODES = frozenset({"Serverless", "Knative"})


def find_repo_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` that looks like this repository."""
    for candidate in [start.resolve(), *start.resolve().parents]:
        if (candidate / "pyproject.toml").is_file() and (candidate / "platform").is_dir():
            return candidate
    return None


@dataclass
class LintContext:
    """Documents and facts shared by every rule of one lint run."""

    documents: list[Document]
    repo_root: Path | None = None
    pools: Mapping[str, Pool] = field(default_factory=dict)
    kubectl: str | None = None
    # platform/versions.yaml; empty when there is none (version-dependent rules then skip).
    versions: Mapping[str, str] = field(default_factory=dict)
    # `kubectl kustomize` output per directory, so one run builds each folder once
    # (rules.appcontent.built): the per-file rule, the Application rule and the rehearsal.
    kustomize_builds: dict[str, tuple[list[Any] | None, str]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        *,
        repo_root: Path | None,
        pools_file: Path | None = None,
        versions_file: Path | None = None,
        use_kubectl: bool = True,
    ) -> LintContext:
        """``pools_file``/``versions_file`` default to the repository's ``platform/`` ones."""
        if pools_file is None and repo_root is not None:
            pools_file = repo_root / "platform" / "pools.yaml"
        if versions_file is None and repo_root is not None:
            versions_file = repo_root / VERSIONS_FILE
        versions: Mapping[str, str] = {}
        if versions_file is not None and versions_file.is_file():
            try:
                versions = load_versions(versions_file)
            except ConfigError:
                # As with pools: version rules skip, test_versions checks the file itself.
                versions = {}
        pools: Mapping[str, Pool] = {}
        if pools_file is not None and pools_file.is_file():
            try:
                pools = load_pools(pools_file)
            except ConfigError:
                # A broken pools file must not hide the other findings; rules then skip
                # the pool checks (the renderer's own tests catch the file itself).
                pools = {}
        return cls(
            documents=list(documents),
            repo_root=repo_root,
            pools=pools,
            kubectl=shutil.which("kubectl") if use_kubectl else None,
            versions=versions,
        )

    def of_kind(self, kind: str, group: str | None = None) -> Iterator[Document]:
        for doc in self.documents:
            if doc.kind == kind and (group is None or doc.group == group):
                yield doc

    def namespaces(self) -> frozenset[str]:
        """Namespaces the repository's documents live in."""
        return frozenset(d.namespace for d in self.documents if d.namespace)

    def inference_services(self) -> dict[tuple[str | None, str], Document]:
        """(namespace, name) -> InferenceService; namespace None when unset."""
        return {(d.namespace, d.name): d for d in self.of_kind("InferenceService")}

    def find_inference_service(self, name: str, namespace: str | None) -> Document | None:
        for (ns, isvc_name), doc in self.inference_services().items():
            if isvc_name == name and (namespace is None or ns is None or ns == namespace):
                return doc
        return None

    def configmap_data(self, name: str, namespace: str) -> Mapping[str, Any] | None:
        """Merged ``data`` of every ConfigMap (whole or partial) with that name."""
        found: dict[str, Any] | None = None
        for doc in self.of_kind("ConfigMap"):
            if doc.name == name and doc.namespace in (namespace, None):
                data = doc.data.get("data")
                if isinstance(data, dict):
                    found = {**(found or {}), **data}
        return found

    def knative_flags_enabled(self) -> bool:
        data = self.configmap_data("config-features", "knative-serving") or {}
        return all(str(data.get(flag, "")).lower() == "enabled" for flag in KNATIVE_NODE_FLAGS)

    def kserve_config(self, key: str) -> Mapping[str, Any] | None:
        """One JSON section of KServe's ``inferenceservice-config`` (None if absent/bad)."""
        raw = (self.configmap_data("inferenceservice-config", "kserve") or {}).get(key)
        if not isinstance(raw, str):
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def default_deployment_mode(self) -> str | None:
        deploy = self.kserve_config("deploy") or {}
        mode = deploy.get("defaultDeploymentMode")
        return str(mode) if mode else None

    def knative_setting(self, configmap: str, key: str) -> str | None:
        """A key of one of Knative Serving's ConfigMaps as this repository patches it."""
        value = (self.configmap_data(configmap, "knative-serving") or {}).get(key)
        return None if value is None else str(value)

    def max_revision_timeout(self) -> int:
        """``max-revision-timeout-seconds`` (config-defaults), else Knative's default 600."""
        raw = self.knative_setting("config-defaults", "max-revision-timeout-seconds")
        return int(raw) if raw and raw.isdigit() else admission.DEFAULT_MAX_REVISION_TIMEOUT_SECONDS

    def revision_timeout(self) -> int:
        raw = self.knative_setting("config-defaults", "revision-timeout-seconds")
        return int(raw) if raw and raw.isdigit() else admission.DEFAULT_REVISION_TIMEOUT_SECONDS

    def runtimes(self) -> dict[str, Mapping[str, Any]]:
        """ServingRuntimes and ClusterServingRuntimes of the repository, by name."""
        found: dict[str, Mapping[str, Any]] = {}
        for kind in ("ClusterServingRuntime", "ServingRuntime"):
            for doc in self.of_kind(kind):
                found[doc.name] = doc.data
        return found
