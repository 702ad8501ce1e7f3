"""Step 4, wait: until Git is applied and the predictor's traffic is split as asked.

Done means three facts at once: the Argo CD Application that syncs InferenceServices is
``Synced`` at our commit (or a later one that contains it), the InferenceService carries
the ``canaryTrafficPercent`` we committed and is ``Ready``, and KServe's
``status.components.predictor.traffic`` gives the latest revision the share we asked for
(the canary percent, 100 after promote, 0 after rollback with 100 on the previous one).
A failing InferenceService shows ``Progressing`` in Argo CD, not ``Degraded``, so the wait
is always bounded by a timeout whose error shows the last state seen.

Status comes from the Kubernetes API in a cluster (``status_url`` is
``https://kubernetes.default.svc``, the pipeline's default, or empty): the Argo CD
``Application`` resource and the InferenceService, read with the step's ServiceAccount
token (``platform/k8s/pipelines`` grants the reads). Any other ``status_url`` is an
Argo CD-shaped HTTP API that also serves the InferenceService: the local platform's sync
loop.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from nexus.errors import ReleaseError
from nexus.release.gitops import is_ancestor
from nexus.release.plan import ISVC_APPLICATION

Expect = Literal["canary", "full", "rollback"]


@dataclass(frozen=True, slots=True)
class Rollout:
    """The revisions taking traffic once the rollout is done."""

    latest_revision: str
    stable_revision: str | None
    traffic: tuple[tuple[str, int], ...]
    synced_revision: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        raw = json.loads(text)
        return cls(
            latest_revision=raw["latest_revision"],
            stable_revision=raw["stable_revision"],
            traffic=tuple((str(r), int(p)) for r, p in raw["traffic"]),
            synced_revision=raw["synced_revision"],
        )


class StatusSource(Protocol):
    def application(self) -> Mapping[str, Any] | None:
        """The Argo CD Application, or ``None`` where there is no Argo CD to ask."""

    def inference_service(self) -> Mapping[str, Any] | None:
        """The InferenceService object, or ``None`` while it does not exist."""


def _get_json(
    url: str, *, headers: Mapping[str, str] | None = None, context: ssl.SSLContext | None = None
) -> Mapping[str, Any] | None:
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310
            body: Mapping[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as exc:
        exc.close()  # the error carries the open response
        if exc.code == 404:
            return None
        raise


@dataclass(frozen=True, slots=True)
class HttpStatus:
    """Argo CD's application API and the InferenceService as served under ``status_url``."""

    status_url: str
    namespace: str
    name: str
    app: str = ISVC_APPLICATION

    def application(self) -> Mapping[str, Any] | None:
        return _get_json(f"{self.status_url.rstrip('/')}/api/v1/applications/{self.app}")

    def inference_service(self) -> Mapping[str, Any] | None:
        return _get_json(
            f"{self.status_url.rstrip('/')}/apis/serving.kserve.io/v1beta1/namespaces/"
            f"{self.namespace}/inferenceservices/{self.name}"
        )


# Where a pod finds the API server and its ServiceAccount's credentials (Kubernetes docs,
# "Accessing the Kubernetes API from a Pod"; projected by the kubelet into every pod).
KUBERNETES_API: Final = "https://kubernetes.default.svc"
SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
ARGOCD_NAMESPACE: Final = "argocd"


@dataclass(frozen=True, slots=True)
class KubernetesStatus:
    """The Application and the InferenceService as the Kubernetes API serves them.

    Argo CD's API server returns the same ``Application`` object as the Kubernetes API
    (``status.sync.revision``/``status``), and reading the resource needs only RBAC, no
    Argo CD token. The bearer token is read at every call: the kubelet rotates it.
    """

    api_url: str
    namespace: str
    name: str
    app: str = ISVC_APPLICATION
    argocd_namespace: str = ARGOCD_NAMESPACE
    credentials: Path = SERVICE_ACCOUNT_DIR

    def _get(self, path: str) -> Mapping[str, Any] | None:
        try:
            token = (self.credentials / "token").read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ReleaseError(
                f"no ServiceAccount token at {self.credentials}: the wait step reads the "
                f"Kubernetes API with it (run the pipeline as nexus-release)"
            ) from exc
        ca = self.credentials / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)
        return _get_json(
            f"{self.api_url.rstrip('/')}{path}",
            headers={"Authorization": f"Bearer {token}"},
            context=context,
        )

    def application(self) -> Mapping[str, Any] | None:
        return self._get(
            f"/apis/argoproj.io/v1alpha1/namespaces/{self.argocd_namespace}/applications/{self.app}"
        )

    def inference_service(self) -> Mapping[str, Any] | None:
        return self._get(
            f"/apis/serving.kserve.io/v1beta1/namespaces/{self.namespace}"
            f"/inferenceservices/{self.name}"
        )


def status_source(status_url: str, namespace: str, model: str) -> StatusSource:
    """The Kubernetes API for the in-cluster URL (or none given), else an Argo CD-shaped API."""
    if not status_url or status_url.rstrip("/") == KUBERNETES_API:
        return KubernetesStatus(KUBERNETES_API, namespace, model)
    return HttpStatus(status_url, namespace, model)


def expected_canary(expect: Expect, percent: int) -> int | None:
    """The ``canaryTrafficPercent`` the committed spec carries for this expectation."""
    return {"canary": percent, "full": None, "rollback": 0}[expect]


def check_isvc(isvc: Mapping[str, Any], expect: Expect, percent: int) -> tuple[str | None, Rollout]:
    """``(None, rollout)`` when done, else ``(reason, partial rollout)``; a pure function."""
    spec = isvc.get("spec", {}).get("predictor", {})
    status = isvc.get("status", {})
    entries = status.get("components", {}).get("predictor", {}).get("traffic") or []
    traffic = tuple((str(e.get("revisionName", "")), int(e.get("percent") or 0)) for e in entries)
    latest = [e for e in entries if e.get("latestRevision")]
    others = sorted(
        (e for e in entries if not e.get("latestRevision")), key=lambda e: -(e.get("percent") or 0)
    )
    rollout = Rollout(
        latest_revision=str(latest[0].get("revisionName", "")) if latest else "",
        stable_revision=str(others[0].get("revisionName")) if others else None,
        traffic=traffic,
        synced_revision=None,
    )
    want = expected_canary(expect, percent)
    if spec.get("canaryTrafficPercent") != want:
        return (
            f"spec canaryTrafficPercent is {spec.get('canaryTrafficPercent')}, not {want}",
            rollout,
        )
    generation = isvc.get("metadata", {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return f"generation {generation} not observed yet ({observed})", rollout
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if not ready or ready[0].get("status") != "True":
        reason = ready[0].get("message") or ready[0].get("reason") if ready else "no condition"
        return f"not Ready ({reason})", rollout
    latest_percent = int(latest[0].get("percent") or 0) if latest else 0
    rest = sum(int(e.get("percent") or 0) for e in others)
    share = {"canary": percent, "full": 100, "rollback": 0}[expect]
    if not latest and expect != "rollback":
        return "no latest revision in the traffic list", rollout
    if latest_percent != share or rest != 100 - share:
        return f"traffic is {list(traffic)}, want {share}% on the latest revision", rollout
    return None, rollout


def wait_rollout(
    source: StatusSource,
    *,
    commit: str,
    expect: Expect,
    percent: int,
    timeout_s: float,
    repo_url: str = "",
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Rollout:
    """Poll ``source`` until done; ``ReleaseError`` with the last state after ``timeout_s``."""
    deadline = clock() + timeout_s
    contains: dict[str, bool] = {}
    reason = "nothing observed yet"
    while True:
        try:
            app = source.application()
            synced: str | None = None
            if app is not None:
                sync = app.get("status", {}).get("sync", {})
                synced = str(sync.get("revision") or "")
                if synced and synced not in contains:
                    contains[synced] = bool(repo_url) and is_ancestor(repo_url, commit, synced)
                if sync.get("status") != "Synced" or not (synced == commit or contains[synced]):
                    reason = f"application is {sync.get('status')} at {synced[:12] or '?'}"
                    synced = None
            isvc = source.inference_service() if app is None or synced else None
            if isvc is None and (app is None or synced):
                reason = "the InferenceService does not exist yet"
            elif isvc is not None:
                problem, rollout = check_isvc(isvc, expect, percent)
                if problem is None:
                    return Rollout(
                        rollout.latest_revision, rollout.stable_revision, rollout.traffic, synced
                    )
                reason = problem
        except (OSError, ValueError) as exc:  # refused, reset, timeouts, invalid JSON
            reason = f"status API unavailable: {exc}"
        if clock() >= deadline:
            raise ReleaseError(f"rollout ({expect}) not done after {timeout_s:.0f}s: {reason}")
        sleep(poll_s)


def wait_step(
    *,
    status_url: str,
    namespace: str,
    model: str,
    commit: str,
    expect: Expect,
    canary_percent: int,
    timeout_s: float,
    gitops_repo: str = "",
) -> str:
    """The KFP component's body: the rollout (revisions and traffic) as JSON."""
    source = status_source(status_url, namespace, model)
    rollout = wait_rollout(
        source,
        commit=commit,
        expect=expect,
        percent=canary_percent,
        timeout_s=timeout_s,
        repo_url=gitops_repo,
    )
    print(f"nexus-release: rollout {expect} done, traffic {list(rollout.traffic)}")
    return rollout.to_json()
