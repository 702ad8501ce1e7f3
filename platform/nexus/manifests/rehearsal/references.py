"""References: what a document uses must exist, in its namespace, with its keys, in time.

What is checked, and where the cluster enforces it:
- pod templates (env ``secretKeyRef``/``configMapKeyRef``, ``envFrom``, secret/configMap/
  PVC volumes, ``imagePullSecrets``, ``serviceAccountName``): the kubelet refuses to start
  a container whose Secret, ConfigMap or key is missing (``CreateContainerConfigError``) and
  the ReplicaSet controller creates no pod for a missing ServiceAccount; the Deployment then
  passes its progress deadline and gitops-engine calls it Degraded
  (argo-cd v3.5.0 ``gitops-engine/pkg/health/health_deployment.go``), an InferenceService
  stays not Ready (``resource_customizations/serving.kserve.io/InferenceService/health.lua``);
- ``serving.kserve.io/storageSecretName``: the storage initializer reads that Secret in the
  InferenceService's namespace (kserve aaac4e294 ``pkg/credentials/
  service_account_credentials.go`` ``CreateStorageSpecSecretEnvs``);
- Istio Gateway ``tls.credentialName``: a ``kubernetes.io/tls`` Secret (``tls.crt``,
  ``tls.key``) in the namespace of the gateway workload, istio-system for the default
  ingress gateway (istio 86c9f01 ``pilot/pkg/model/credentials/resource.go``
  ``ToResourceName``: a bare name is ``kubernetes://<name>`` of the proxy's namespace);
- PodMonitors: picked up only by a Prometheus whose ``podMonitorSelector`` matches their
  labels (prerequisites ``selects``), and scraping only pods their selector matches, on
  port names those pods declare (prometheus-operator v0.86.0
  ``pkg/apis/monitoring/v1/podmonitor_types.go`` ``PodMetricsEndpoint.Port``; the
  ``namespaceSelector`` defaults to the PodMonitor's own namespace);
- a namespaced object needs its namespace: Argo CD's apply fails without it unless the
  Application sets ``CreateNamespace=true`` (argo-cd v3.5.0 ``controller/sync.go``
  ``SyncAppState``: ``WithNamespaceModifier`` only with that option);
- VirtualService destinations and the pipeline's URLs name Services that must exist;
- a LocalModelNodeGroup's PersistentVolume must be the host directory KServe's node agent
  fills: its DaemonSet mounts hostPath ``/models`` (kserve aaac4e294
  ``charts/kserve-localmodel-resources/files/resources.yaml``); another path gives the
  cached InferenceServices an empty volume.

A provider counts when it is created at the same or an earlier step (``tree.Step``): a
later one is never reached, because the consumer's wave never turns Healthy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from nexus.manifests.model_cache import AGENT_HOST_PATH
from nexus.manifests.prerequisites import PREREQUISITES_FILE
from nexus.manifests.rehearsal.pods import Pod, pipeline_urls, selects
from nexus.manifests.rehearsal.tree import BEFORE_SYNC, BUILTIN_SERVICES, Obj, Problem, Step, Tree

RULE: Final = "rehearsal-references"
STORAGE_SECRET: Final = "serving.kserve.io/storageSecretName"  # noqa: S105 - a key's name
GATEWAY_NAMESPACE: Final = "istio-system"
TLS_KEYS: Final = ("tls.crt", "tls.key")
TLS_TYPE: Final = "kubernetes.io/tls"


@dataclass(frozen=True, slots=True)
class Use:
    kind: str
    namespace: str
    name: str
    keys: tuple[str, ...]
    where: str
    type: str = ""  # a Secret's required type (kubernetes.io/tls for a Gateway), else any


@dataclass(frozen=True, slots=True)
class Provided:
    step: Step
    keys: frozenset[str] | None  # None: not knowable (anything goes)
    by: str
    type: str = ""  # a Secret's type when known


def _provided(tree: Tree, kind: str, namespace: str, name: str) -> list[Provided]:
    found: list[Provided] = []
    prereq = tree.prerequisites
    if kind == "Secret":
        declared = prereq.secret(namespace, name)
        if declared is not None:
            keys = frozenset(declared.keys)
            found.append(Provided(BEFORE_SYNC, keys, PREREQUISITES_FILE, declared.type))
        for obj in tree.of_kind("ExternalSecret"):
            target = obj.spec.get("target") or {}
            if obj.namespace == namespace and (target.get("name") or obj.name) == name:
                names = [str(d.get("secretKey")) for d in obj.spec.get("data") or []]
                any_key = bool(obj.spec.get("dataFrom")) or bool(target.get("template"))
                kind_of = str((target.get("template") or {}).get("type") or "Opaque")
                held = None if any_key else frozenset(names)
                found.append(Provided(obj.step, held, obj.ref, kind_of))
    if kind == "Service":
        if (namespace, name) in BUILTIN_SERVICES:
            found.append(Provided(BEFORE_SYNC, None, "Kubernetes"))
        for svc in prereq.services:
            if (svc.namespace, svc.name) == (namespace, name):
                found.append(Provided(BEFORE_SYNC, None, PREREQUISITES_FILE))
        # KServe and Knative make a Service per InferenceService and InferenceGraph.
        for made in tree.of_kind("InferenceService", "InferenceGraph"):
            if made.namespace == namespace and name.startswith(made.name):
                found.append(Provided(made.step, None, made.ref))
    for obj in tree.find(kind, namespace, name):
        data = obj.data
        data_keys = {*(data.get("data") or {}), *(data.get("stringData") or {})}
        data_keys |= {*(data.get("binaryData") or {})}
        kind_of = str(data.get("type") or ("Opaque" if kind == "Secret" else ""))
        found.append(Provided(obj.step, frozenset(map(str, data_keys)), obj.ref, kind_of))
    return found


def _env_uses(pod: Pod, container: Any) -> Iterator[Use]:
    name = container.get("name", "?")
    for env in container.get("env") or []:
        source = env.get("valueFrom") or {}
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = source.get(key)
            if isinstance(ref, dict) and not ref.get("optional"):
                where = f"env {env.get('name')} of container {name}"
                yield Use(kind, pod.namespace, str(ref.get("name")), (str(ref.get("key")),), where)
    for env_from in container.get("envFrom") or []:
        for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
            ref = env_from.get(key)
            if isinstance(ref, dict) and not ref.get("optional"):
                where = f"envFrom of container {name}"
                yield Use(kind, pod.namespace, str(ref.get("name")), (), where)


def pod_uses(pod: Pod) -> Iterator[Use]:
    ns = pod.namespace
    if pod.service_account != "default":
        yield Use("ServiceAccount", ns, pod.service_account, (), "serviceAccountName")
    for secret in pod.spec.get("imagePullSecrets") or []:
        yield Use("Secret", ns, str(secret.get("name")), (), "imagePullSecrets")
    for volume in pod.spec.get("volumes") or []:
        where = f"volume {volume.get('name')}"
        if isinstance(volume.get("secret"), dict) and not volume["secret"].get("optional"):
            yield Use("Secret", ns, str(volume["secret"].get("secretName")), (), where)
        if isinstance(volume.get("configMap"), dict) and not volume["configMap"].get("optional"):
            yield Use("ConfigMap", ns, str(volume["configMap"].get("name")), (), where)
        if isinstance(volume.get("persistentVolumeClaim"), dict):
            claim = str(volume["persistentVolumeClaim"].get("claimName"))
            yield Use("PersistentVolumeClaim", ns, claim, (), where)
    for container in pod.containers():
        yield from _env_uses(pod, container)


def object_uses(obj: Obj) -> Iterator[Use]:
    ns = obj.namespace or "default"
    if obj.kind == "InferenceService" and STORAGE_SECRET in obj.annotations:
        name = str(obj.annotations[STORAGE_SECRET])
        yield Use("Secret", ns, name, (), f"annotation {STORAGE_SECRET}")
    if obj.kind == "Gateway" and obj.group.startswith("networking.istio.io"):
        for server in obj.spec.get("servers") or []:
            credential = (server.get("tls") or {}).get("credentialName")
            if credential:
                where = (
                    f"servers[].tls.credentialName (port {server.get('port', {}).get('number')})"
                )
                yield Use("Secret", GATEWAY_NAMESPACE, str(credential), TLS_KEYS, where, TLS_TYPE)
    if obj.kind == "ServiceAccount":
        for secret in obj.data.get("secrets") or []:
            yield Use("Secret", ns, str(secret.get("name")), (), "secrets")
    if obj.kind == "VirtualService":
        for route in obj.spec.get("http") or []:
            for dest in route.get("route") or []:
                host = str((dest.get("destination") or {}).get("host", ""))
                parts = host.split(".")
                if host.endswith(".svc.cluster.local") and len(parts) >= 5:
                    yield Use("Service", parts[1], parts[0], (), f"route to {host}")


def check_use(
    tree: Tree, use: Use, owner: Obj, step: Step, stalls: tuple[Obj, ...]
) -> Problem | None:
    """A Problem when ``use`` is missing, too late, or lacks a key; else None."""
    provided = _provided(tree, use.kind, use.namespace, use.name)
    what = f"{use.kind} {use.namespace}/{use.name}"
    user = f"{owner.ref} ({use.where})"
    if not provided:
        elsewhere = sorted(
            {o.namespace or "" for o in tree.find(use.kind, None, use.name)}
            | {
                s.namespace
                for s in tree.prerequisites.secrets
                if use.kind == "Secret" and s.name == use.name
            }
        )
        hint = (
            f" (there is one in {', '.join(elsewhere)}: the wrong namespace)" if elsewhere else ""
        )
        return Problem(
            owner,
            RULE,
            f"{user} uses {what}, which neither the tree nor {PREREQUISITES_FILE} creates{hint}",
            f"create {what} in the tree at or before {step.label}, or list it in "
            f"{PREREQUISITES_FILE} with the command that makes it",
            stalls,
            f"{what} does not exist",
        )
    in_time = [p for p in provided if p.step <= step]
    if not in_time:
        first = min(provided, key=lambda p: p.step)
        return Problem(
            owner,
            RULE,
            f"{user} uses {what}, which {first.by} creates only at {first.step.label}, "
            f"after {owner.ref} at {step.label}",
            f"give {first.by} a sync wave at or before {step.label} (or {owner.ref} a later one)",
            stalls,
            f"{what} comes later ({first.step.label})",
        )
    wrong = [p for p in in_time if use.type and p.type and p.type != use.type]
    if wrong and len(wrong) == len(in_time):
        return Problem(
            owner,
            RULE,
            f"{user} needs {what} of type {use.type}, but {wrong[0].by} makes it {wrong[0].type}",
            f"make {what} a {use.type} Secret",
            stalls,
            f"{what} is not of type {use.type}",
        )
    missing = [k for k in use.keys if all(p.keys is not None and k not in p.keys for p in in_time)]
    if missing:
        return Problem(
            owner,
            RULE,
            f"{user} reads key(s) {', '.join(missing)} of {what}, which has only "
            f"{', '.join(sorted(set().union(*(p.keys or () for p in in_time)))) or 'no keys'}",
            f"add the key(s) to {what} (or read a key it has)",
            stalls,
            f"{what} has no key {missing[0]}",
        )
    return None


def _namespace(
    tree: Tree, obj: Obj, namespace: str, stalls: tuple[Obj, ...], who: str = ""
) -> Problem | None:
    made = tree.namespace_step(namespace)
    if made is not None and made <= obj.step:
        return None
    when = "nothing creates it" if made is None else f"it is created only at {made.label}"
    return Problem(
        obj,
        RULE,
        f"{who or obj.ref} lives in namespace {namespace}, but {when}",
        f"list namespace {namespace} in {PREREQUISITES_FILE} (namespaces:) or create it "
        "in an earlier wave",
        stalls,
        f"namespace {namespace} does not exist",
    )


def _pod_monitors(tree: Tree, pods: list[Pod]) -> Iterator[Problem]:
    prometheus = tree.prerequisites.of_role("prometheus")
    for monitor in tree.of_kind("PodMonitor", "PrometheusRule"):
        if not any(
            all(monitor.labels.get(k) == v for k, v in p.selects.items()) for p in prometheus
        ):
            yield Problem(
                monitor,
                RULE,
                f"no Prometheus of {PREREQUISITES_FILE} picks up {monitor.ref} (labels "
                f"{dict(monitor.labels)}): "
                + (
                    ", ".join(f"{p.name} selects {dict(p.selects)}" for p in prometheus)
                    or "there is none"
                ),
                f"declare the Prometheus (services: role prometheus, selects:) in "
                f"{PREREQUISITES_FILE}, and give {monitor.ref} its selector labels",
            )
        if monitor.kind != "PodMonitor":
            continue
        names = (monitor.spec.get("namespaceSelector") or {}).get("matchNames") or [
            monitor.namespace
        ]
        any_ns = bool((monitor.spec.get("namespaceSelector") or {}).get("any"))
        targets = [
            p
            for p in pods
            if (any_ns or p.namespace in names) and selects(monitor.spec.get("selector"), p.labels)
        ]
        if not targets:
            yield Problem(
                monitor,
                RULE,
                f"{monitor.ref} selects no pod the tree makes in {', '.join(map(str, names))}",
                "match the labels KServe, Knative or the workload give the pods",
            )
            continue
        for endpoint in monitor.spec.get("podMetricsEndpoints") or []:
            port = endpoint.get("port")
            if port and not any(port in p.ports for p in targets):
                yield Problem(
                    monitor,
                    RULE,
                    f"{monitor.ref} scrapes port {port!r}, which none of its pods declares "
                    f"({', '.join(sorted({n for p in targets for n in p.ports}))})",
                    "name a port the selected pods have",
                )


def _pipeline_services(tree: Tree, pods: list[Pod]) -> Iterator[Problem]:
    steps = [p for p in pods if p.role.startswith("pipeline step")]
    if not steps:
        return
    for param, url in sorted(pipeline_urls(tree).items()):
        parts = (urlsplit(url).hostname or "").split(".")
        if len(parts) >= 3 and parts[2] == "svc":
            use = Use("Service", parts[1], parts[0], (), f"the pipeline's {param} {url}")
            problem = check_use(tree, use, steps[0].owner, steps[0].owner.step, ())
            if problem is not None:
                yield problem


def _node_group_paths(tree: Tree) -> Iterator[Problem]:
    for group in tree.of_kind("LocalModelNodeGroup"):
        volume = group.spec.get("persistentVolumeSpec") or {}
        path = (volume.get("local") or volume.get("hostPath") or {}).get("path")
        if path is None or str(path).rstrip("/") == AGENT_HOST_PATH:
            continue
        uris = {
            str(c.spec.get("sourceModelUri"))
            for c in tree.of_kind("LocalModelNamespaceCache")
            if group.name in (c.spec.get("nodeGroups") or [])
        }
        cached = tuple(
            isvc
            for isvc in tree.of_kind("InferenceService")
            if str(((isvc.spec.get("predictor") or {}).get("model") or {}).get("storageUri"))
            in uris
        )
        yield Problem(
            group,
            RULE,
            f"{group.ref} puts its PersistentVolume at {path}, but KServe's node agent downloads "
            f"into hostPath {AGENT_HOST_PATH}: the cached InferenceServices "
            f"({', '.join(i.name for i in cached) or 'none'}) would mount an empty directory",
            f"set persistentVolumeSpec path to {AGENT_HOST_PATH}",
            cached,
            f"{group.ref}'s volume is not the directory the model cache fills",
        )


def check(tree: Tree, pods: list[Pod]) -> list[Problem]:
    problems: list[Problem] = []
    for obj in tree.objects:
        stalls = (obj,)
        if obj.namespace is not None:
            problem = _namespace(tree, obj, obj.namespace, stalls)
            problems += [problem] if problem else []
        for use in object_uses(obj):
            problem = check_use(tree, use, obj, obj.step, stalls)
            problems += [problem] if problem else []
    for pod in pods:
        owner = pod.owner
        waits: tuple[Obj, ...] = (owner,) if owner.namespace == pod.namespace else ()
        if pod.namespace != owner.namespace:
            problem = _namespace(tree, owner, pod.namespace, (), pod.describe)
            problems += [problem] if problem else []
        for use in pod_uses(pod):
            use = Use(use.kind, use.namespace, use.name, use.keys, f"{pod.role} pod, {use.where}")
            problem = check_use(tree, use, owner, owner.step, waits)
            problems += [problem] if problem else []
    problems += _pod_monitors(tree, pods)
    problems += _pipeline_services(tree, pods)
    problems += _node_group_paths(tree)
    # One finding per object and cause (Redis reads the same Secret twice, ...).
    unique: dict[tuple[int, str, str], Problem] = {}
    for problem in problems:
        unique.setdefault(
            (id(problem.obj), problem.reason, problem.message if not problem.reason else ""),
            problem,
        )
    return list(unique.values())
