"""What the controller reads from Git, and how a Pod spec becomes a local command line.

The manifests stay exactly as the cluster reads them; this module resolves the parts a
cluster resolves at run time:

- ``envFrom``/``valueFrom`` references. ConfigMaps come from ``platform/k8s/base/`` of
  the GitOps commit being synced (``CONFIG_FOLDER``; the cluster's own values, e.g.
  ``nexus-gateway-config``), never from the working checkout;
  Secrets are created outside Git in a cluster, so locally they are built by
  ``nexus up``: ``nexus-gateway-secrets`` holds the demo API key and the local Redis URL,
  ``hf-token`` holds ``$HF_TOKEN`` when it is set. A reference to anything else fails the
  revision unless it is ``optional``.
- The predictor container: on one machine it is the BentoML CPU worker
  (``predictor_command``), or a real vLLM engine with ``--predictor vllm``
  (``nexus.local.vllm_engine``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from nexus.errors import ResourceError

PredictorMode = Literal["cpu", "vllm"]
# Where the ConfigMaps live in the GitOps repository (Argo CD's platform Application syncs
# an overlay of this folder; the local platform reads the base as it is).
CONFIG_FOLDER = "platform/k8s/base"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    name: str
    namespace: str
    body: Mapping[str, Any]
    path: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse(files: Mapping[str, str], kind: str) -> list[Resource]:
    """Every document of ``kind`` in ``files`` (path -> YAML text), in path order."""
    found: list[Resource] = []
    for path in sorted(files):
        try:
            documents = list(yaml.safe_load_all(files[path]))
        except yaml.YAMLError as exc:
            raise ResourceError(f"{path} is not valid YAML: {exc}") from exc
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("kind") != kind:
                continue
            meta = doc.get("metadata") or {}
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                raise ResourceError(f"{path}: a {kind} without metadata.name")
            namespace = meta.get("namespace") or DEFAULT_NAMESPACE
            found.append(Resource(kind, name, str(namespace), doc, path))
    return found


def cluster_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def configmap_data(configmaps: Iterable[Resource]) -> dict[str, dict[str, str]]:
    """ConfigMap name -> data, from the ConfigMaps of a synced commit."""
    return {
        cm.name: {str(k): str(v) for k, v in (cm.body.get("data") or {}).items()}
        for cm in configmaps
    }


def container_env(
    container: Mapping[str, Any],
    *,
    configmaps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: ``envFrom`` first, ``env`` wins."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        for field, store, what in (
            ("configMapRef", configmaps, "ConfigMap"),
            ("secretRef", secrets, "Secret"),
        ):
            ref = source.get(field)
            if ref is None:
                continue
            values = store.get(ref.get("name", ""))
            if values is None:
                if ref.get("optional"):
                    continue
                raise ResourceError(f"{what} {ref.get('name')!r} is not known locally")
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in values.items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            env[name] = str(item["value"])
            continue
        value_from = item.get("valueFrom") or {}
        for field, store, what in (
            ("configMapKeyRef", configmaps, "ConfigMap"),
            ("secretKeyRef", secrets, "Secret"),
        ):
            ref = value_from.get(field)
            if ref is None:
                continue
            value = (store.get(ref.get("name", "")) or {}).get(ref.get("key", ""))
            if value is not None:
                env[name] = value
            elif not ref.get("optional"):
                raise ResourceError(f"{what} key {ref.get('name')}/{ref.get('key')} is not known")
    return env


def transformer_container(isvc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    containers = ((isvc.get("spec") or {}).get("transformer") or {}).get("containers") or []
    return containers[0] if containers else None


def storage_uri(predictor: Mapping[str, Any]) -> str | None:
    model = predictor.get("model") or {}
    if model.get("storageUri"):
        return str(model["storageUri"])
    for container in predictor.get("containers") or []:
        for item in container.get("env") or []:
            if item.get("name") == "STORAGE_URI" and "value" in item:
                return str(item["value"])
    return None


def predictor_command(*, name: str, port: int, project_dir: Path) -> list[str]:
    """The local process playing the predictor container of one revision.

    The BentoML CPU worker from ``bento/`` (the image the local manifests name), started as
    its container would be but on a local port. The transformer rewrites ``model`` to the
    InferenceService name (unless ``GATEWAY_UPSTREAM_MODEL_NAME`` says otherwise), so every
    worker serves that name. Real vLLM engines (``--predictor vllm``) come from
    ``nexus.local.vllm_engine``.
    """
    worker = project_dir / "bento" / "cpu_worker.py"
    return [sys.executable, str(worker), "--model-name", name, "--host", "127.0.0.1",
            "--port", str(port), "--token-latency-ms", "2"]  # fmt: skip


def transformer_command(args: Sequence[str]) -> list[str]:
    """The local process of the transformer container, given the arguments KServe gives
    it (``admission.local_transformer_args``), bound to loopback only (a pod binds all
    interfaces; a laptop should not)."""
    return [sys.executable, "-m", "nexus.transformer", *args, "--host", "127.0.0.1"]
