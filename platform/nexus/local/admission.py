"""What the cluster's webhooks do to a commit, played by the local controller.

The rules themselves live in ``nexus.manifests.admission`` (shared with the linter); this
module decides how the local platform shows them, as a cluster shows them:

- **Knative's validation** (port names, timeouts) runs on the Knative Service that KServe's
  controller creates from the InferenceService, not on the InferenceService Argo CD
  applies. So Argo CD's sync succeeds; KServe's reconcile fails with the webhook's message
  wrapped twice (``fails to reconcile predictor: fails to reconcile knative service: ...``:
  ``components/predictor.go``, ``reconcilers/knative/ksvc_reconciler.go``) and records it as
  a Warning event ``InternalError`` on the InferenceService (``inferenceservice/controller.go``);
  the refused update never reaches the Knative Service, so the previous revision keeps
  serving, and a new InferenceService never becomes Ready. KServe: master of Aug 2026
  (aaac4e294), between 0.20 and 0.21. Locally: the refused spec is not applied, the
  previous one keeps running, the message is the InferenceService's event, and its
  Ready condition's message when nothing serves.
- **KServe's defaulting** (mutating webhook and controller): the live object carries the
  rewritten ``deploymentMode``, and the transformer runs with the arguments KServe appends
  (``transformer_custom.go``); locally only the predictor host and the port are translated to
  loopback addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nexus.errors import ResourceError
from nexus.manifests import admission

KNATIVE_WEBHOOK = "validation.webhook.serving.knative.dev"
# The order in which KServe's controller reconciles components (controller.go): the first
# refused one stops the pass, so only its message is recorded.
ORDER = ("predictor", "transformer", "explainer")


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event on an InferenceService, as ``kubectl get events`` lists it."""

    namespace: str
    name: str
    type: str
    reason: str
    message: str


def load_versions(project_dir: Path) -> dict[str, str]:
    """The engine versions the tree is written for (``platform/versions.yaml``)."""
    path = project_dir / "platform" / "versions.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ResourceError(f"cannot read the declared engine versions {path}: {exc}") from exc
    if not isinstance(data, dict) or "kserve" not in data:
        raise ResourceError(f"{path} declares no kserve version")
    return {str(k): str(v) for k, v in data.items()}


def knative_refusal(isvc: Mapping[str, Any], versions: Mapping[str, str]) -> str | None:
    """KServe's ``InternalError`` message when Knative refuses a component, else ``None``."""
    by_component: dict[str, list[str]] = {}
    for refusal in admission.knative_refusals(isvc, versions):
        component, _, message = refusal.partition(": ")
        by_component.setdefault(component, []).append(message)
    for component in ORDER:
        if component in by_component:
            # knative.dev/pkg apis.FieldError joins several errors with a newline.
            details = "\n".join(by_component[component])
            return (
                f"fails to reconcile {component}: fails to reconcile knative service: "
                f'admission webhook "{KNATIVE_WEBHOOK}" denied the request: '
                f"validation failed: {details}"
            )
    return None


def knative_mode(isvc: Mapping[str, Any], versions: Mapping[str, str]) -> bool:
    """Whether KServe deploys the InferenceService as Knative Services (revisions, traffic
    split, queue-proxy timeouts), after its defaulting; unset means the cluster default,
    ``Serverless`` in ``platform/k8s/cluster/inferenceservice-config``."""
    mode = admission.deployment_mode(isvc, versions)
    return mode in (None, admission.KNATIVE, admission.LEGACY_SERVERLESS)


def request_timeout(isvc: Mapping[str, Any], versions: Mapping[str, str]) -> float | None:
    """Seconds the queue-proxy of the InferenceService's entry component (the transformer,
    else the predictor) lets a request run: its ``timeout``, else Knative's
    ``revision-timeout-seconds``; ``None`` in Standard mode, where no queue-proxy runs."""
    if not knative_mode(isvc, versions):
        return None
    spec = isvc.get("spec") or {}
    entry = "transformer" if spec.get("transformer") else "predictor"
    return float(admission.effective_timeout(isvc, entry))


def live_object(isvc: Mapping[str, Any], versions: Mapping[str, str]) -> dict[str, Any]:
    """The InferenceService as the API server stores it: Git's, after KServe's mutating
    webhook rewrote ``deploymentMode`` (the transformer's arguments are added to its pod,
    not to the stored object)."""
    out = dict(isvc)
    mode = admission.deployment_mode(isvc, versions)
    if mode is not None:
        metadata = dict(out.get("metadata") or {})
        annotations = dict(metadata.get("annotations") or {})
        annotations[admission.DEPLOYMENT_MODE_ANNOTATION] = mode
        metadata["annotations"] = annotations
        out["metadata"] = metadata
    return out


def local_transformer_args(isvc: Mapping[str, Any], *, predictor_port: int, port: int) -> list[str]:
    """The transformer's arguments as KServe gives them, with the predictor's service host
    and the container port replaced by the loopback addresses the local processes use."""
    args = admission.transformer_args(isvc)
    if args is None:
        raise ResourceError("the InferenceService has no transformer container")
    replace = {
        admission.ARG_PREDICTOR_HOST: f"127.0.0.1:{predictor_port}",
        admission.ARG_HTTP_PORT: str(port),
    }
    out: list[str] = []
    pending: str | None = None
    for arg in args:
        if pending is not None:
            out.append(replace[pending])
            pending = None
            continue
        flag, equals, _ = arg.partition("=")
        if flag in replace and equals:
            out.append(f"{flag}={replace[flag]}")
        elif arg in replace:
            out.append(arg)
            pending = arg
        else:
            out.append(arg)
    return out
