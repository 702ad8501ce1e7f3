"""Argo CD rules: Applications must point at real paths, sync in order, stay in their project.

Argo CD reports a missing path or a forbidden kind only when it syncs, in the cluster;
and wrong sync waves are never reported at all, they just let an InferenceGraph reach
the cluster before its InferenceServices (and a runtime after the ISVCs that need it).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from nexus.manifests.context import LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding
from nexus.manifests.rules.appcontent import app_content, sources

WAVE = "argocd.argoproj.io/sync-wave"
# platform (everything else) -> runtimes -> InferenceServices -> InferenceGraphs
STAGE = {
    "ServingRuntime": 1,
    "ClusterServingRuntime": 1,
    "InferenceService": 2,
    "InferenceGraph": 3,
}
STAGE_NAMES = {0: "platform resources", 1: "runtimes", 2: "InferenceServices", 3: "InferenceGraphs"}
CLUSTER_SCOPED = frozenset(
    {
        "Namespace", "Node", "PersistentVolume", "StorageClass", "ClusterRole",
        "ClusterRoleBinding", "CustomResourceDefinition", "ClusterServingRuntime",
        "ClusterStorageContainer", "PriorityClass", "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration", "IngressClass", "RuntimeClass", "APIService",
        "GatewayClass", "ClusterIssuer", "LocalModelCache", "LocalModelNodeGroup",
    }
)  # fmt: skip


def wave(doc: Document) -> int:
    try:
        return int(str(doc.annotations.get(WAVE, "0")))
    except ValueError:
        return 0


def _stages(docs: Sequence[Document]) -> set[int]:
    return {STAGE.get(d.kind, 0) for d in docs}


def _check_paths(app: Document, ctx: LintContext) -> Iterator[Finding]:
    if ctx.repo_root is None:
        return
    for index, source in enumerate(sources(app)):
        path = source.get("path")
        field = "spec.source" if "source" in app.spec else f"spec.sources[{index}]"
        # Helm charts and templated (ApplicationSet) paths are not folders of this repo.
        templated = not isinstance(path, str) or source.get("chart") or "{{" in path
        if not templated and not (ctx.repo_root / str(path)).is_dir():
            yield app.finding(
                f"{field}.path",
                "argocd-app-path",
                f"path {path!r} does not exist in the repository; the sync would fail",
                "point the Application at an existing folder (relative to the repo root)",
            )
        revision = source.get("targetRevision")
        if revision in (None, "", "HEAD"):
            yield app.finding(
                f"{field}.targetRevision",
                "argocd-unpinned-revision",
                "targetRevision is unset or HEAD, so what syncs depends on the repo's default",
                "pin targetRevision to a branch, tag or commit",
                warning=True,
            )


def _check_app_order(
    apps: Sequence[Document], contents: Mapping[str, list[Document]]
) -> Iterator[Finding]:
    staged = [(app, _stages(contents[app.name])) for app in apps if contents.get(app.name)]
    for later, later_stages in staged:
        for earlier, earlier_stages in staged:
            if later is earlier:
                continue
            if min(later_stages) > max(earlier_stages) and wave(later) <= wave(earlier):
                yield later.finding(
                    f"metadata.annotations.{WAVE}",
                    "argocd-sync-order",
                    f"Application {later.name!r} ({STAGE_NAMES[min(later_stages)]}) syncs in "
                    f"wave {wave(later)}, not after {earlier.name!r} "
                    f"({STAGE_NAMES[max(earlier_stages)]}, wave {wave(earlier)})",
                    f"give {later.name!r} a sync-wave greater than {wave(earlier)}",
                )


def _check_resource_order(docs: Sequence[Document]) -> Iterator[Finding]:
    by_dir: dict[str, list[Document]] = defaultdict(list)
    for doc in docs:
        by_dir[str(doc.path.parent)].append(doc)
    for group in by_dir.values():
        for later in group:
            for earlier in group:
                s_later, s_earlier = STAGE.get(later.kind, 0), STAGE.get(earlier.kind, 0)
                if s_later > s_earlier >= 1 and wave(later) <= wave(earlier):
                    yield later.finding(
                        f"metadata.annotations.{WAVE}",
                        "argocd-sync-order",
                        f"{later.kind} {later.name!r} syncs in wave {wave(later)}, not after "
                        f"{earlier.kind} {earlier.name!r} (wave {wave(earlier)})",
                        f"give it a sync-wave greater than {wave(earlier)}",
                    )


def _allowed(entries: Any, group: str, kind: str) -> bool:
    for entry in entries or []:
        if (
            isinstance(entry, dict)
            and fnmatch.fnmatchcase(group, str(entry.get("group", "")))
            and fnmatch.fnmatchcase(kind, str(entry.get("kind", "")))
        ):
            return True
    return False


def _check_project(
    app: Document, project: Document | None, content: Sequence[Document]
) -> Iterator[Finding]:
    name = str(app.spec.get("project", "default"))
    if project is None:
        if name != "default":
            yield app.finding(
                "spec.project",
                "argocd-project-missing",
                f"AppProject {name!r} is not defined in the repository",
                "add the AppProject under argocd/ or fix the project name",
            )
        return
    spec = project.spec
    repos = [str(r) for r in spec.get("sourceRepos") or []]
    for index, source in enumerate(sources(app)):
        repo = str(source.get("repoURL", ""))
        if not any(fnmatch.fnmatchcase(repo, pattern) for pattern in repos):
            yield app.finding(
                "spec.source.repoURL" if "source" in app.spec else f"spec.sources[{index}].repoURL",
                "argocd-project-repo",
                f"repository {repo!r} is not among AppProject {project.name!r}'s sourceRepos",
                "use the project's repository or add it to sourceRepos",
            )
    destinations = [d for d in spec.get("destinations") or [] if isinstance(d, dict)]
    app_ns = str((app.spec.get("destination") or {}).get("namespace", ""))
    seen: set[tuple[str, str, str]] = set()
    for doc in content:
        scoped = doc.kind in CLUSTER_SCOPED
        key = (doc.group, doc.kind, "" if scoped else (doc.namespace or app_ns))
        if key in seen:
            continue
        seen.add(key)
        if scoped:
            ok = _allowed(spec.get("clusterResourceWhitelist"), doc.group, doc.kind) and not (
                _allowed(spec.get("clusterResourceBlacklist"), doc.group, doc.kind)
            )
        else:
            white = spec.get("namespaceResourceWhitelist")
            ok = (white is None or _allowed(white, doc.group, doc.kind)) and not _allowed(
                spec.get("namespaceResourceBlacklist"), doc.group, doc.kind
            )
        if not ok:
            yield app.finding(
                "spec.project",
                "argocd-project-kind",
                f"Application {app.name!r} deploys {doc.kind} ({doc.group or 'core'}), which "
                f"AppProject {project.name!r} does not allow",
                f"allow group {doc.group!r} kind {doc.kind!r} in the AppProject's "
                f"{'clusterResourceWhitelist' if scoped else 'namespaceResourceWhitelist'}",
            )
        namespace = key[2]
        if namespace and not any(
            fnmatch.fnmatchcase(namespace, str(d.get("namespace", "*"))) for d in destinations
        ):
            yield app.finding(
                "spec.destination",
                "argocd-project-destination",
                f"Application {app.name!r} deploys into namespace {namespace!r}, which "
                f"AppProject {project.name!r} has no destination for",
                f"add namespace {namespace!r} to the AppProject's destinations",
            )


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    findings: list[Finding] = list(_check_resource_order(docs))
    targets = [d for d in docs if d.kind == "Application" and d.group == "argoproj.io"]
    if not targets:
        return findings
    apps = list(ctx.of_kind("Application", "argoproj.io"))
    projects = {p.name: p for p in ctx.of_kind("AppProject", "argoproj.io")}
    contents = {app.name: app_content(app, ctx) or [] for app in apps}
    for app in targets:
        findings.extend(_check_paths(app, ctx))
        project = projects.get(str(app.spec.get("project", "default")))
        findings.extend(_check_project(app, project, contents.get(app.name, [])))
    target_keys = {(t.display, t.index) for t in targets}
    findings.extend(
        f for f in _check_app_order(apps, contents) if (f.path, f.document) in target_keys
    )
    return findings
