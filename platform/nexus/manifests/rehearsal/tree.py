"""The tree as Argo CD would apply it: every object with its Application and sync wave.

The app-of-apps ``argocd/application.nexus-root.yaml`` syncs ``argocd/apps``; each child
Application is built as Argo CD's repo server builds it (``kubectl kustomize`` of its
path, ``nexus.manifests.rules.appcontent.app_content``). A namespaced object without a
namespace gets the Application's ``destination.namespace``, as Argo CD sets it
(argo-cd v3.5.0 ``controller/sync.go`` ``WithNamespaceModifier``). Objects are ordered by
(Application wave, resource wave): the project's Lua health check of Applications
(``argocd/argocd-cm.application-health.yaml``) makes the root wait for each child
Application to be Healthy before the next wave, and inside an Application gitops-engine
applies one wave at a time (``gitops-engine/pkg/sync/sync_context.go`` ``Sync``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import yaml

from nexus.manifests.context import LintContext
from nexus.manifests.documents import YAML_LOADER, Document
from nexus.manifests.findings import Finding
from nexus.manifests.prerequisites import Prerequisites
from nexus.manifests.rules.appcontent import app_content

WAVE_ANNOTATION: Final = "argocd.argoproj.io/sync-wave"
ROOT_APPLICATION: Final = "argocd/application.nexus-root.yaml"
# Applied by hand after Argo CD (docs/cluster.md): what pipeline runs need in `kubeflow`.
HAND_APPLIED: Final = ("platform/k8s/pipelines/",)
# Opt-in Kustomize Components: rehearsed as if an overlay included them.
COMPONENTS: Final = "platform/k8s/components/"
# On a Component's own metadata (kustomize's Kustomization type has ObjectMeta; an
# annotation there changes no built object): the comma-separated namespaces whose pods the
# component requires Istio sidecars in. The rehearsal plays the component with those
# namespaces injected, so its AuthorizationPolicies are enforced as they would be.
SIDECARS_ANNOTATION: Final = "nexus.dev/requires-sidecars"
# The compiled release pipeline: its steps are pods too (rehearsal.pods).
PIPELINE_FILE: Final = "pipelines/compiled/release.yaml"
CLUSTER_SCOPED: Final = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "LocalModelNodeGroup",
        "ClusterServingRuntime",
        "ClusterStorageContainer",
        "ClusterSecretStore",
        "ClusterExternalSecret",
    }
)
# Namespaces every Kubernetes cluster has.
BUILTIN_NAMESPACES: Final = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Services every Kubernetes cluster has (the API server's).
BUILTIN_SERVICES: Final = frozenset({("default", "kubernetes")})


@dataclass(frozen=True, slots=True, order=True)
class Step:
    """When an object is applied: ``order`` sorts, ``label`` says it to a person."""

    order: tuple[int, int]
    label: str


BEFORE_SYNC: Final = Step((-(10**9), 0), "platform/prerequisites.yaml (before Argo CD syncs)")
AFTER_SYNC: Final = Step((10**9, 0), "applied by hand after Argo CD (kubectl apply -k)")


def wave_of(data: Mapping[str, Any]) -> int:
    meta = data.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(WAVE_ANNOTATION, "0")
    try:
        return int(str(raw).strip())
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class Obj:
    """One object the install creates, where it is written and when it is applied."""

    data: Mapping[str, Any]
    namespace: str | None
    step: Step
    source: Document
    app: str = ""

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))

    @property
    def group(self) -> str:
        return str(self.data.get("apiVersion", "")).rpartition("/")[0]

    @property
    def name(self) -> str:
        return str((self.data.get("metadata") or {}).get("name", ""))

    @property
    def labels(self) -> Mapping[str, str]:
        return (self.data.get("metadata") or {}).get("labels") or {}

    @property
    def annotations(self) -> Mapping[str, str]:
        return (self.data.get("metadata") or {}).get("annotations") or {}

    @property
    def spec(self) -> Mapping[str, Any]:
        spec = self.data.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def ref(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"

    def finding(self, rule: str, message: str, fix: str) -> Finding:
        return self.source.finding("", rule, message, fix)


@dataclass(frozen=True, slots=True)
class Problem:
    """A finding of one rehearsal class, and what Argo CD would wait on because of it."""

    obj: Obj
    rule: str
    message: str
    fix: str
    # Objects that would stay Progressing or turn Degraded because of it (for the waves).
    stalls: tuple[Obj, ...] = ()
    reason: str = ""

    def finding(self) -> Finding:
        return self.obj.finding(self.rule, self.message, self.fix)


@dataclass(frozen=True, slots=True)
class App:
    name: str
    wave: int
    namespace: str
    path: str = ""
    # syncOptions CreateNamespace=true: Argo CD creates ``namespace`` before the first wave.
    creates_namespace: bool = False

    @property
    def first_step(self) -> Step:
        return Step((self.wave, -(10**9)), f"Application {self.name} (wave {self.wave}), start")


@dataclass
class Tree:
    """What the rehearsal plays: objects in sync order, prerequisites, pools, the context."""

    objects: list[Obj]
    apps: list[App]
    prerequisites: Prerequisites
    ctx: LintContext
    components: dict[str, list[Obj]] = field(default_factory=dict)
    # Per component, the namespaces it requires sidecars in (SIDECARS_ANNOTATION).
    component_sidecars: dict[str, frozenset[str]] = field(default_factory=dict)
    # Namespaces played as sidecar-injected besides those labelled so (a component's).
    injected: frozenset[str] = frozenset()
    # The documents of pipelines/compiled/release.yaml (empty without it).
    pipeline: list[Any] = field(default_factory=list)

    def of_kind(self, *kinds: str) -> Iterator[Obj]:
        return (o for o in self.objects if o.kind in kinds)

    def find(self, kind: str, namespace: str | None, name: str) -> list[Obj]:
        return [
            o
            for o in self.objects
            if o.kind == kind and o.name == name and (namespace is None or o.namespace == namespace)
        ]

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """Labels of a namespace the cluster will have; None when nothing makes it."""
        base = {"kubernetes.io/metadata.name": name}
        declared = self.prerequisites.namespace(name)
        if declared is not None:
            return {**base, **declared.labels}
        for obj in self.find("Namespace", None, name):
            return {**base, **{str(k): str(v) for k, v in obj.labels.items()}}
        return base if name in BUILTIN_NAMESPACES else None

    def namespace_step(self, name: str) -> Step | None:
        if self.prerequisites.namespace(name) is not None or name in BUILTIN_NAMESPACES:
            return BEFORE_SYNC
        made = [o.step for o in self.find("Namespace", None, name)]
        made += [a.first_step for a in self.apps if a.creates_namespace and a.namespace == name]
        return min(made) if made else None

    def sidecar_namespace(self, name: str) -> bool:
        """Istio injects sidecars into pods of a namespace labelled istio-injection=enabled."""
        if name in self.injected:
            return True
        return (self.namespace_labels(name) or {}).get("istio-injection") == "enabled"


def _source_of(
    data: Mapping[str, Any], built: Document, repo: Sequence[Document], under: str
) -> Document:
    """The repository file a built object comes from (same kind and name), preferring the
    Application's own folder (``under``), else the build itself."""
    meta = data.get("metadata") or {}
    found = [
        doc
        for doc in repo
        if doc.kind == data.get("kind")
        and doc.name == meta.get("name")
        and doc.namespace in (None, meta.get("namespace"))
    ]
    found.sort(key=lambda doc: not doc.display.startswith(under))
    return found[0] if found else built


def _objects(
    docs: Sequence[Document],
    repo: Sequence[Document],
    app: App,
    step_of: Callable[[Mapping[str, Any]], Step],
) -> list[Obj]:
    found = []
    for doc in docs:
        if doc.kind in ("Kustomization", "Component"):
            continue
        namespace = None if doc.kind in CLUSTER_SCOPED else (doc.namespace or app.namespace)
        source = _source_of(doc.data, doc, repo, app.path)
        found.append(Obj(doc.data, namespace, step_of(doc.data), source, app.name))
    return found


def build_tree(ctx: LintContext, prerequisites: Prerequisites) -> Tree:
    """Every object of every Application of the root, plus the hand-applied folders."""
    repo = ctx.documents
    objects: list[Obj] = []
    apps: list[App] = []
    roots = [d for d in ctx.of_kind("Application") if d.display == ROOT_APPLICATION]
    for root in roots:
        for child in app_content(root, ctx) or []:
            if child.kind != "Application":
                continue
            dest = (child.spec.get("destination") or {}).get("namespace") or "default"
            path = str((child.spec.get("source") or {}).get("path") or "")
            options = (child.spec.get("syncPolicy") or {}).get("syncOptions") or []
            creates = "CreateNamespace=true" in options
            app = App(child.name, wave_of(child.data), str(dest), path, creates)
            apps.append(app)

            def step_of(data: Mapping[str, Any], app: App = app) -> Step:
                wave = wave_of(data)
                label = f"Application {app.name} (wave {app.wave}), resource wave {wave}"
                return Step((app.wave, wave), label)

            objects += _objects(app_content(child, ctx) or [], repo, app, step_of)
    for prefix in HAND_APPLIED:
        hand = App("", 0, "default", prefix)
        docs = [d for d in repo if d.display.startswith(prefix)]
        objects += _objects(docs, repo, hand, lambda _data: AFTER_SYNC)
    components: dict[str, list[Obj]] = {}
    sidecars: dict[str, frozenset[str]] = {}
    platform = next((a for a in apps if a.wave == min(x.wave for x in apps)), None)
    for doc in repo:
        if doc.display.startswith(COMPONENTS) and doc.kind == "Component":
            name = doc.display[len(COMPONENTS) :].split("/")[0]
            raw = str(
                ((doc.data.get("metadata") or {}).get("annotations") or {}).get(
                    SIDECARS_ANNOTATION, ""
                )
            )
            sidecars[name] = frozenset(n.strip() for n in raw.split(",") if n.strip())
        if doc.display.startswith(COMPONENTS) and doc.kind not in ("Component", "Kustomization"):
            name = doc.display[len(COMPONENTS) :].split("/")[0]
            app = platform or App("", 0, "default")
            step = Step((app.wave, wave_of(doc.data)), f"component {name}")

            def fixed(_data: Mapping[str, Any], step: Step = step) -> Step:
                return step

            components.setdefault(name, []).extend(_objects([doc], repo, app, fixed))
    apps.sort(key=lambda a: (a.wave, a.name))
    objects.sort(key=lambda o: o.step.order)
    pipeline: list[Any] = []
    if ctx.repo_root is not None and (ctx.repo_root / PIPELINE_FILE).is_file():
        text = (ctx.repo_root / PIPELINE_FILE).read_text(encoding="utf-8")
        pipeline = [d for d in yaml.load_all(text, Loader=YAML_LOADER) if isinstance(d, dict)]
    return Tree(objects, apps, prerequisites, ctx, components, sidecars, pipeline=pipeline)
