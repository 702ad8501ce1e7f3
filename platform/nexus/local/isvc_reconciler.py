"""The InferenceService reconciler: revisions, their processes, and the front of each.

``desire()`` takes the InferenceServices of a commit (after the webhooks: a refused spec
is an event, the admitted one keeps running); ``apply()`` (every loop pass) moves the
platform one step towards them, as KServe and Knative do: revisions created, processes
started, traffic moved when Knative would move it, revisions out of traffic stopped after
a drain, removed InferenceServices pruned (Argo CD's automated prune).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from nexus.errors import PlatformError, ResourceError
from nexus.local import prometheus
from nexus.local.admission import (
    Event,
    knative_mode,
    knative_refusal,
    live_object,
    local_transformer_args,
    request_timeout,
)
from nexus.local.front import Backend, Front
from nexus.local.ports import PortBook
from nexus.local.reconcile import Settings, converge, process_names
from nexus.local.resources import (
    Resource,
    cluster_host,
    configmap_data,
    container_env,
    predictor_command,
    transformer_command,
    transformer_container,
)
from nexus.local.revisions import (
    RevisionState,
    TrafficTarget,
    canary_percent,
    desired_traffic,
    live,
    observe,
    route,
)
from nexus.local.status import IsvcView
from nexus.local.supervisor import Service
from nexus.local.vllm_engine import Engines
from nexus.local.workloads import Workloads
from nexus.manifests.model import runtime_of
from nexus.release import tag_routing

# How long a revision out of traffic keeps running for the requests already sent to it
# (Knative keeps such pods for its scale-to-zero grace period, 30 s by default).
DRAIN_SECONDS = 10.0
WORKER_ENV_PREFIX = "NEXUS_WORKER_"  # bento/service.py's ENV_PREFIX


@dataclass(slots=True)
class Listener:
    front: Front
    runner: web.AppRunner
    port: int


@dataclass(slots=True)
class IsvcRun:
    resource: Resource  # as Git has it at the synced commit
    # The newest spec the cluster's webhooks admitted: what runs. ``None`` while nothing
    # was ever admitted (a new InferenceService refused from the start).
    applied: Resource | None = None
    refusal: str | None = None  # KServe's InternalError message for ``resource``
    desired: tuple[TrafficTarget, ...] = ()
    error: str | None = None
    listener: Listener | None = None
    # Revisions out of traffic -> when they left it; stopped after DRAIN_SECONDS.
    draining: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class IsvcReconciler:
    settings: Settings
    workloads: Workloads
    book: PortBook
    session: aiohttp.ClientSession
    make_front: Callable[[str], tuple[Front, web.Application]]
    states: dict[str, RevisionState] = field(default_factory=dict)
    isvcs: dict[str, IsvcRun] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)
    # ConfigMap name -> data at the synced commit (``CONFIG_FOLDER``), as a cluster has them.
    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    # Set with --predictor vllm: vLLM-runtime revisions get real engines.
    engines: Engines | None = None
    events: list[Event] = field(default_factory=list)
    # Specs admitted before a restart (state.json), for InferenceServices not seen since.
    remembered: dict[str, Resource] = field(default_factory=dict)

    def secrets(self) -> dict[str, dict[str, str]]:
        """The Secrets a cluster creates outside Git, made from local values."""
        gateway = {"GATEWAY_API_KEYS": self.settings.api_key}
        if self.settings.redis_url:
            gateway["GATEWAY_REDIS_URL"] = self.settings.redis_url
        found: dict[str, dict[str, str]] = {"nexus-gateway-secrets": gateway}
        if os.environ.get("HF_TOKEN"):
            found["hf-token"] = {"HF_TOKEN": os.environ["HF_TOKEN"]}
        return found

    def desire(self, isvcs: list[Resource], configmaps: list[Resource]) -> None:
        """The InferenceServices (and ConfigMaps) of the newest commit; ``apply()`` converges."""
        self.configmaps = configmap_data(configmaps)
        for resource in isvcs:
            run = self.isvcs.get(resource.key) or IsvcRun(
                resource, applied=self.remembered.pop(resource.key, None)
            )
            self.isvcs[resource.key] = run
            run.resource = resource
            refusal = knative_refusal(resource.body, self.settings.versions)
            if refusal is None:
                run.applied = resource
            elif refusal != run.refusal:
                event = Event(
                    resource.namespace, resource.name, "Warning", "InternalError", refusal
                )
                self.events.append(event)
            run.refusal = refusal
        self.wanted = {r.key for r in isvcs}

    async def apply(self) -> None:
        for key in list(self.isvcs):
            if key in self.wanted:
                await self._isvc(self.isvcs[key])
            else:
                await self._prune_isvc(key)

    def hosts(self) -> dict[str, int]:
        """Cluster host (``<isvc>.<ns>.svc.cluster.local``) -> the port of its front."""
        return {
            cluster_host(run.resource.name, run.resource.namespace): run.listener.port
            for run in self.isvcs.values()
            if run.listener is not None
        }

    def targets(self) -> list[prometheus.Target]:
        """Every running predictor and transformer, labelled as a cluster's PodMonitor does."""
        found = []
        for key, state in self.states.items():
            isvc = self.isvcs.get(key)
            if isvc is None:
                continue
            for revision in state.revisions:
                for name, component in zip(process_names(revision.name),
                                           ("predictor", "transformer"), strict=True):  # fmt: skip
                    workload = self.workloads.get(name)
                    if workload is not None and workload.process is not None:
                        labels = {"isvc": isvc.resource.name, "revision": revision.name}
                        address = f"127.0.0.1:{workload.service.port}"
                        found.append(prometheus.Target(address, component, labels))
        return found

    def revision_ready(self, revision: str) -> bool:
        parts = [self.workloads.get(n) for n in process_names(revision)]
        return all(w is not None and w.ready and w.failure is None for w in parts)

    def revision_failure(self, revision: str) -> str | None:
        for name in process_names(revision):
            workload = self.workloads.get(name)
            if workload is not None and workload.failure:
                return f"{name} {workload.failure}"
        return None

    def revision_restarting(self, revision: str) -> str | None:
        """Why a revision that exited and is being restarted is not ready yet."""
        for name in process_names(revision):
            workload = self.workloads.get(name)
            if workload is not None and workload.last_exit and not workload.ready:
                return (
                    f"{name} restarting ({workload.restarts} restarts) after: {workload.last_exit}"
                )
        return None

    async def _isvc(self, run: IsvcRun) -> None:
        res = run.applied
        if res is None:
            return
        try:
            predictor = (res.body.get("spec") or {}).get("predictor") or {}
            state = observe(self.states.get(res.key, RevisionState()), res.name, predictor)
            percent = canary_percent(predictor)
            if not knative_mode(res.body, self.settings.versions):
                # Standard (raw) mode ignores canaryTrafficPercent silently (kserve#5335)
                # and rolls its Deployment over to the new spec instead.
                percent = None
            run.desired = desired_traffic(state, percent)
            tagged = tag_routing.enabled(res.body)
            if run.listener is None:
                run.listener = await self._listen(res.name)
            for name in live(state, run.desired, tag_routing=tagged):
                await self._revision(res, state, name)
            state = route(state, run.desired, self.revision_ready)
            self.states[res.key] = state
            run.listener.front.set_backends(
                [self._backend(t, tagged) for t in state.traffic
                 if t.percent > 0 or self.revision_ready(t.revision)],
                timeout=request_timeout(res.body, self.settings.versions),
            )  # fmt: skip
            await self._retire(run, keep=set(live(state, run.desired, tag_routing=tagged)))
            run.error = None
        except (ResourceError, PlatformError, ValueError) as exc:
            run.error = str(exc)

    async def _retire(self, run: IsvcRun, *, keep: set[str]) -> None:
        """Stop the revisions out of traffic once they had ``DRAIN_SECONDS`` to finish.

        The front stops sending them requests at once, but requests it sent a moment
        before are still on their way, as with Knative, which keeps a revision's pods
        after traffic leaves them. Stopping at once made those requests fail.
        """
        now = time.monotonic()
        for name in list(run.draining):
            if name in keep:
                del run.draining[name]
        for revision in self.states.get(run.resource.key, RevisionState()).revisions:
            if revision.name in keep or not self._running(revision.name):
                continue
            left = run.draining.setdefault(revision.name, now)
            if now - left >= DRAIN_SECONDS:
                await self._stop_revision(revision.name)
                del run.draining[revision.name]

    def _running(self, revision: str) -> bool:
        """Processes or booked ports left to stop or release for ``revision``."""
        names = process_names(revision)
        return any(self.workloads.get(n) is not None or self.book.get(n) for n in names)

    async def _listen(self, isvc: str) -> Listener:
        port = self.book.allocate(f"front-{isvc}")
        front, app = self.make_front(isvc)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
        except OSError as exc:
            await runner.cleanup()
            raise PlatformError(f"port {port} for the {isvc} front is unavailable: {exc}") from None
        return Listener(front, runner, port)

    def _backend(self, target: TrafficTarget, tagged: bool) -> Backend:
        """KServe tags ``prev`` always and ``latest`` only with tag routing (ksvc_reconciler.go)."""
        port = self.book.get(process_names(target.revision)[0])
        return Backend(
            target.revision,
            self._transformer_url(target.revision),
            target.percent,
            tag=target.tag if tagged or target.tag == "prev" else None,
            predictor_url=f"http://127.0.0.1:{port}" if port else None,
        )

    def _transformer_url(self, revision: str) -> str:
        port = self.book.get(process_names(revision)[1])
        return f"http://127.0.0.1:{port}"

    async def _revision(self, res: Resource, state: RevisionState, name: str) -> None:
        revision = state.revision(name)
        assert revision is not None
        worker, transformer = process_names(name)
        worker_port = self.book.allocate(worker)
        if self.engines is not None and runtime_of(res.body) == "vllm":
            service = await self.engines.service(
                res.name, revision.spec, revision=worker, port=worker_port
            )
        else:
            command = predictor_command(
                name=res.name, port=worker_port, project_dir=self.settings.project_dir
            )
            service = Service(
                worker, command, worker_port, f"http://127.0.0.1:{worker_port}/health",
                _worker_env(revision.spec),
            )  # fmt: skip
        await converge(self.workloads, service)
        container = transformer_container(res.body)
        if container is None:
            raise ResourceError(f"{res.key} has no transformer; the local platform needs one")
        running = self.workloads.get(transformer)
        if running is not None and running.service.env is not None:
            # The kubelet resolves envFrom when it creates a container, and a Knative
            # revision is immutable: a ConfigMap changed by a later commit reaches new
            # revisions, never the transformers already running.
            env = dict(running.service.env)
        else:
            env = container_env(container, configmaps=self.configmaps, secrets=self.secrets())
        port = self.book.allocate(transformer)
        args = local_transformer_args(res.body, predictor_port=worker_port, port=port)
        command = transformer_command(args)
        await converge(
            self.workloads,
            Service(transformer, command, port, f"http://127.0.0.1:{port}/v2/health/live", env),
        )

    async def _stop_revision(self, revision: str) -> None:
        # The transformer first, as requests flow: what it still relays reaches the worker.
        for name in reversed(process_names(revision)):
            if self.workloads.get(name) is not None or self.book.get(name) is not None:
                await self.workloads.stop(name)
                self.book.release(name)
        if self.engines is not None:
            self.engines.storage.remove(revision)

    async def _prune_isvc(self, key: str) -> None:
        run = self.isvcs.pop(key)
        for revision in (self.states.pop(key, None) or RevisionState()).revisions:
            await self._stop_revision(revision.name)
        if run.listener is not None:
            await run.listener.runner.cleanup()
        self.book.release(f"front-{run.resource.name}")

    def views(self) -> tuple[IsvcView, ...]:
        isvcs = []
        for key, run in self.isvcs.items():
            state = self.states.get(key, RevisionState())
            names = [r.name for r in state.revisions]
            failures = {n: f for n in names if (f := self.revision_failure(n))}
            restarting = {n: r for n in names if (r := self.revision_restarting(n))}
            isvcs.append(
                IsvcView(
                    resource=run.resource,
                    state=state,
                    desired=run.desired,
                    ready={n: self.revision_ready(n) for n in names},
                    failures=failures,
                    restarting=restarting,
                    url=f"http://127.0.0.1:{run.listener.port}" if run.listener else None,
                    error=run.error,
                    refusal=run.refusal,
                    live=live_object(run.resource.body, self.settings.versions),
                )
            )
        return tuple(isvcs)

    async def close(self) -> None:
        for run in self.isvcs.values():
            if run.listener is not None:
                await run.listener.runner.cleanup()


def _worker_env(predictor: Mapping[str, Any]) -> dict[str, str] | None:
    """The CPU worker's ``NEXUS_WORKER_*`` settings from the revision's predictor container
    env, as its pod gets them (a revision is immutable: its own spec, never the newest):
    a revision can be a deliberately broken (``GARBLE``) or slow one."""
    containers = predictor.get("containers") or []
    found = {
        str(item["name"]): str(item["value"])
        for container in containers
        for item in container.get("env") or []
        if str(item.get("name", "")).startswith(WORKER_ENV_PREFIX) and "value" in item
    }
    return found or None
