"""Every pod the tree causes, with the labels, ports and pod spec a cluster would give it.

- Workloads: the pod template of Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs
  and CronJobs; bare Pods.
- InferenceServices (Knative mode): a predictor and a transformer pod. KServe labels them
  ``component: predictor|transformer`` and ``serving.kserve.io/inferenceservice: <name>``
  next to the InferenceService's own labels (kserve aaac4e294
  ``pkg/controller/v1beta1/inferenceservice/components/predictor.go``); the model
  container takes the ServingRuntime's container and the InferenceService's fields over it.
- InferenceGraphs: a router pod with the graph's labels plus
  ``serving.kserve.io/inferencegraph: <name>``, the graph's nodeSelector, tolerations,
  affinity and serviceAccountName (``pkg/controller/v1alpha1/inferencegraph/
  knative_reconciler.go`` ``createKnativeService``); resources from ``spec.resources``,
  else the ``router`` section of inferenceservice-config (``controller.go``).
- Knative adds the queue-proxy to each revision pod: the user port is named
  ``user-port`` and the queue's metrics port ``http-usermetric`` (9091); requests enter
  at the queue port 8012 (knative-v1.21.1 ``pkg/apis/serving/v1/revision_helpers.go``,
  ``pkg/networking/constants.go``).
- The model cache: KServe's node agent DaemonSet (namespace kserve, nodeSelector
  ``kserve/localmodel: worker``, no tolerations: ``charts/kserve-localmodel-resources/
  files/resources.yaml``) on the nodes of every LocalModelNodeGroup, and one download Job
  per cached model and node group, in ``localModel.jobNamespace`` with only a
  ``kubernetes.io/hostname`` node selector and the cache's serviceAccountName
  (``pkg/controller/v1alpha1/localmodelnode/controller.go`` ``launchJob``).
- Pipeline steps: one pod per executor of ``pipelines/compiled/release.yaml``, under the
  ServiceAccount of ``platform/k8s/pipelines`` in its namespace, with the Secrets the
  compiled pipeline mounts (``secretAsVolume``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from nexus.manifests.model_cache import AGENT_NODE_LABEL
from nexus.manifests.rehearsal.tree import AFTER_SYNC, Obj, Tree

USER_PORT: Final = 8080
QUEUE_PORT: Final = 8012
QUEUE_METRICS_PORT: Final = 9091
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"
DEFAULT_JOB_NAMESPACE: Final = "kserve-localmodel-jobs"
WORKLOADS: Final = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")


@dataclass(frozen=True, slots=True)
class Pod:
    """One kind of pod: who causes it, where it runs and what it asks for."""

    owner: Obj
    role: str
    namespace: str
    labels: Mapping[str, str]
    spec: Mapping[str, Any]
    ports: Mapping[str, int] = field(default_factory=dict)
    # Pools whose nodes must run it (a DaemonSet's or a node-pinned Job's), else any pool.
    pools: tuple[str, ...] = ()
    knative: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def describe(self) -> str:
        return f"the {self.role} pod of {self.owner.ref}"

    @property
    def service_account(self) -> str:
        return str(self.spec.get("serviceAccountName") or "default")

    def containers(self) -> Iterator[Mapping[str, Any]]:
        for key in ("initContainers", "containers"):
            yield from (c for c in self.spec.get(key) or [] if isinstance(c, dict))


def _ports(containers: list[Mapping[str, Any]], knative: bool) -> dict[str, int]:
    ports: dict[str, int] = {}
    for container in containers:
        for port in container.get("ports") or []:
            if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
                ports[str(port.get("name") or port["containerPort"])] = port["containerPort"]
    if knative:
        # Knative names the serving port user-port whatever the manifest calls it.
        first = next(iter(ports.values()), USER_PORT)
        ports = {"user-port": first, "queue-port": QUEUE_PORT}
        ports["http-usermetric"] = QUEUE_METRICS_PORT
    return ports


def _workload(obj: Obj) -> Pod | None:
    if obj.kind == "Pod":
        template: Mapping[str, Any] = {"metadata": obj.data.get("metadata"), "spec": obj.spec}
    elif obj.kind == "CronJob":
        template = ((obj.spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    else:
        template = obj.spec.get("template") or {}
    spec = template.get("spec")
    if not isinstance(spec, dict):
        return None
    labels = (template.get("metadata") or {}).get("labels") or {}
    containers = list(spec.get("containers") or [])
    return Pod(
        obj, obj.kind.lower(), obj.namespace or "default", labels, spec, _ports(containers, False)
    )


def _component_spec(tree: Tree, isvc: Obj, name: str) -> dict[str, Any] | None:
    component = isvc.spec.get(name)
    if not isinstance(component, dict):
        return None
    spec = {k: v for k, v in component.items() if k not in ("model", "containers")}
    containers = [dict(c) for c in component.get("containers") or [] if isinstance(c, dict)]
    model = component.get("model")
    if isinstance(model, dict):
        runtime = next(
            iter(tree.find("ServingRuntime", isvc.namespace, str(model.get("runtime")))), None
        )
        base: dict[str, Any] = {}
        if runtime is not None:
            base = dict(next(iter(runtime.spec.get("containers") or []), {}) or {})
        over = {k: v for k, v in model.items() if k not in ("modelFormat", "runtime", "storageUri")}
        containers.insert(0, {**base, **over, "name": "kserve-container"})
    spec["containers"] = containers
    return spec


def _inference_service(tree: Tree, isvc: Obj) -> Iterator[Pod]:
    for role in ("predictor", "transformer"):
        spec = _component_spec(tree, isvc, role)
        if spec is None:
            continue
        labels = {
            **isvc.labels,
            **(spec.get("labels") or {}),
            "component": role,
            "serving.kserve.io/inferenceservice": isvc.name,
        }
        ports = _ports(spec["containers"], True)
        annotations = {**isvc.annotations, **(spec.get("annotations") or {})}
        yield Pod(
            isvc,
            role,
            isvc.namespace or "default",
            labels,
            spec,
            ports,
            knative=True,
            annotations=annotations,
        )


def _router(tree: Tree, graph: Obj) -> Pod:
    config = tree.ctx.kserve_config("router") or {}
    resources = graph.spec.get("resources") or {
        "requests": {
            "cpu": config.get("cpuRequest", "0"),
            "memory": config.get("memoryRequest", "0"),
        }
    }
    spec = {
        key: graph.spec[key]
        for key in ("nodeSelector", "tolerations", "affinity", "serviceAccountName")
        if key in graph.spec
    }
    spec["containers"] = [{"name": "router", "resources": resources}]
    labels = {**graph.labels, "serving.kserve.io/inferencegraph": graph.name}
    ports = _ports([], True)
    namespace = graph.namespace or "default"
    return Pod(
        graph, "router", namespace, labels, spec, ports, knative=True, annotations=graph.annotations
    )


def node_group_pools(tree: Tree, group: Obj) -> tuple[str, ...]:
    """Pools whose node labels satisfy a LocalModelNodeGroup's PersistentVolume affinity."""
    affinity = (group.spec.get("persistentVolumeSpec") or {}).get("nodeAffinity") or {}
    terms = ((affinity.get("required") or {}).get("nodeSelectorTerms")) or []
    found = []
    for name, pool in tree.ctx.pools.items():
        labels = {**pool.node_selector, **tree.prerequisites.pool_labels(name)}
        for term in terms:
            exprs = term.get("matchExpressions") or []
            if exprs and all(labels.get(e.get("key")) in (e.get("values") or []) for e in exprs):
                found.append(name)
                break
    return tuple(found)


def _model_cache(tree: Tree) -> Iterator[Pod]:
    groups = {g.name: g for g in tree.of_kind("LocalModelNodeGroup")}
    config = tree.ctx.kserve_config("localModel") or {}
    job_ns = str(config.get("jobNamespace") or DEFAULT_JOB_NAMESPACE)
    for group in groups.values():
        spec = {"nodeSelector": dict([AGENT_NODE_LABEL]), "containers": [{"name": "manager"}]}
        labels = {"app.kubernetes.io/name": "kserve-localmodelnode-agent"}
        pools = node_group_pools(tree, group)
        yield Pod(group, "model-cache node agent", "kserve", labels, spec, pools=pools)
    for cache in tree.of_kind("LocalModelNamespaceCache", "ClusterLocalModel"):
        for name in cache.spec.get("nodeGroups") or []:
            target = groups.get(str(name))
            if target is None:
                continue
            spec = {
                "nodeSelector": {HOSTNAME_LABEL: "<a node of the group>"},
                "containers": [{"name": "kserve-container"}],
                "serviceAccountName": cache.spec.get("serviceAccountName") or "default",
            }
            pools = node_group_pools(tree, target)
            yield Pod(cache, f"model download Job ({target.name})", job_ns, {}, spec, pools=pools)


def _pipeline_steps(tree: Tree) -> Iterator[Pod]:
    accounts = [o for o in tree.objects if o.kind == "ServiceAccount" and o.step == AFTER_SYNC]
    docs = tree.pipeline
    if not docs or not accounts:
        return
    account = accounts[0]
    params = ((docs[0].get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    defaults = {k: v.get("defaultValue") for k, v in params.items() if isinstance(v, dict)}
    executors = ((docs[0].get("deploymentSpec") or {}).get("executors")) or {}
    platform = next((d for d in docs[1:] if isinstance(d, dict) and "platforms" in d), {})
    k8s = ((platform.get("platforms") or {}).get("kubernetes") or {}).get("deploymentSpec") or {}
    mounts = k8s.get("executors") or {}
    volumes: list[dict[str, Any]] = []
    secrets: set[str] = set()
    for executor in sorted(executors):
        for mount in (mounts.get(executor) or {}).get("secretAsVolume") or []:
            param = (mount.get("secretNameParameter") or {}).get("componentInputParameter", "")
            secret = mount.get("secretName") or defaults.get(str(param).split("--")[-1])
            if secret and secret not in secrets:
                secrets.add(secret)
                volumes.append({"name": f"{executor}-secret", "secret": {"secretName": secret}})
    spec = {
        "serviceAccountName": account.name,
        "containers": [{"name": "main"}],
        "volumes": volumes,
    }
    owner = Obj(account.data, account.namespace, AFTER_SYNC, account.source)
    labels = {"workflows.argoproj.io/workflow": "<run>"}
    yield Pod(owner, "pipeline step", account.namespace or "default", labels, spec)


def pipeline_urls(tree: Tree) -> dict[str, str]:
    """The compiled pipeline's default URLs (tracking_uri, prometheus_url, ...)."""
    if not tree.pipeline:
        return {}
    doc = tree.pipeline[0]
    params = ((doc.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return {
        k: str(v["defaultValue"])
        for k, v in params.items()
        if isinstance(v, dict) and str(v.get("defaultValue", "")).startswith("http")
    }


def pods_of(tree: Tree) -> list[Pod]:
    """Every pod the install would run."""
    pods: list[Pod] = []
    for obj in tree.objects:
        if obj.kind in (*WORKLOADS, "CronJob", "Pod"):
            pod = _workload(obj)
            if pod is not None:
                pods.append(pod)
        elif obj.kind == "InferenceService":
            pods.extend(_inference_service(tree, obj))
        elif obj.kind == "InferenceGraph":
            pods.append(_router(tree, obj))
    pods.extend(_model_cache(tree))
    pods.extend(_pipeline_steps(tree))
    return pods


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Kubernetes' LabelSelector (matchLabels, matchExpressions); an empty one selects all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = expr.get("key"), expr.get("operator")
        values = [str(v) for v in expr.get("values") or []]
        present = key in labels
        if op == "In" and (not present or labels[key] not in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True
