"""The local control plane: an Argo CD-like sync loop playing KServe and Knative.

``python -m nexus.local.controller --state-dir .nexus ...`` (started by ``nexus up``)
polls the GitOps repository about once a second and reconciles what it finds:

- every InferenceService of ``inference_services/<environment>/``: one predictor worker
  and one transformer per live Knative revision (``revisions`` holds the rules), and an
  in-process front on a fixed port that splits traffic between the revisions (what
  Knative's route does for ``<isvc>.<ns>.svc.cluster.local``);
- every InferenceGraph of ``graphs/``: our router with ``--host-map`` pointing each
  InferenceService's cluster host at its front;
- the ConfigMaps of ``platform/k8s/base/`` at the same commit, which the transformers'
  ``envFrom`` reads (never the working checkout, which Argo CD does not see);
- Prometheus' scrape targets, and the status API the release pipeline waits on;
- the platform's own services ``nexus up`` hands it (MLflow, Redis, Prometheus: see
  ``service_reconciler``), kept running before anything else is reconciled.

A pipeline therefore changes the platform by pushing to the bare repository, nothing
else. Revision state is kept in ``<state>/controller/state.json`` so a restart keeps
revision numbers and rolled-out history.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from nexus.errors import PlatformError, ResourceError
from nexus.local import atomic_file, prometheus
from nexus.local.admission import load_versions
from nexus.local.front import Front, RevisionMetrics, front_app
from nexus.local.gitops import GitReader
from nexus.local.graph_reconciler import GraphReconciler, TargetsReconciler
from nexus.local.isvc_reconciler import IsvcReconciler
from nexus.local.ports import DEFAULT_BASE, DEFAULT_SPAN, PortBook
from nexus.local.reconcile import Settings
from nexus.local.resources import CONFIG_FOLDER, Resource, parse
from nexus.local.revisions import RevisionState, from_json, to_json
from nexus.local.service_reconciler import ServiceReconciler
from nexus.local.status import Snapshot, status_app
from nexus.local.storage import StorageInitializer
from nexus.local.supervisor import Supervisor, load_services
from nexus.local.vllm_engine import Engines, vllm_python
from nexus.local.workloads import Workloads


class Controller:
    """The sync loop: one pass probes every process, then runs each kind's reconciler."""

    def __init__(
        self,
        *,
        settings: Settings,
        workloads: Workloads,
        isvcs: IsvcReconciler,
        graphs: GraphReconciler,
        targets: TargetsReconciler,
        services: ServiceReconciler,
        reader: GitReader,
    ) -> None:
        self.settings = settings
        self.workloads = workloads
        self.isvcs = isvcs
        self.graphs = graphs
        self.targets = targets
        self.services = services
        self.reader = reader
        self.head: str | None = None
        self.applied: str | None = None
        self.sync_error: str | None = None
        self._files: dict[str, str] = {}

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.isvcs.views(),
            self.graphs.views(),
            self.head,
            self.applied,
            self.sync_error,
            tuple(self.isvcs.events),
            self.services.views(),
        )

    def _waiting(self) -> str | None:
        """What the first sync waits for: every platform service ready once, the CPU model."""
        if not self.services.started:
            return f"waiting for the platform's services: {', '.join(self.services.waiting_for())}"
        record = self.settings.vllm_model_record
        if record is not None and not record.exists():
            return f"waiting for `nexus up` to register the CPU model ({record})"
        return None

    async def sync_once(self) -> None:
        """Fetch, compare, apply: one pass of the loop."""
        self.services.apply()
        await self.workloads.probe()
        waiting = self._waiting()
        if waiting is not None and self.head is None:
            self.sync_error = waiting
            return
        try:
            head = await self.reader.head()
            if head != self.head:
                folder = f"inference_services/{self.settings.environment}"
                files = await self.reader.files(head, folder)
                files.update(await self.reader.files(head, "graphs"))
                isvcs, graphs = parse(files, "InferenceService"), parse(files, "InferenceGraph")
                configmaps = parse(await self.reader.files(head, CONFIG_FOLDER), "ConfigMap")
                self.isvcs.desire(isvcs, configmaps)
                self.graphs.desire(graphs)
                self.head = head
            await self.isvcs.apply()
            await self.graphs.apply(self.isvcs.hosts())
            await self.targets.apply([*self.isvcs.targets(), *self.graphs.targets()])
        except (PlatformError, ResourceError) as exc:
            self.sync_error = str(exc)
        else:
            self.sync_error = None
            self.applied = self.head
        finally:
            # Revision history advances even in a pass that fails later (one process not
            # ready); losing it would renumber revisions after the next `nexus up`.
            self._save()

    def _save(self) -> None:
        path = self.settings.state_dir / "controller" / "state.json"
        data = {key: to_json(state) for key, state in sorted(self.isvcs.states.items())}
        # The admitted specs: after a restart on a commit the webhooks refuse, the previous
        # spec keeps serving, as the Knative Service the refusal never reached does.
        applied = {
            key: {"path": run.applied.path, "body": run.applied.body}
            for key, run in sorted(self.isvcs.isvcs.items())
            if run.applied
        }
        state = {"inference_services": data, "applied": applied}
        text = json.dumps(state, indent=2, sort_keys=True) + "\n"
        atomic_file.write_text(path, text)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.sync_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.interval)


def load_states(state_dir: Path) -> tuple[dict[str, RevisionState], dict[str, Resource]]:
    """Revision histories and admitted specs saved by the previous controller."""
    path = state_dir / "controller" / "state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, {}
    states = {key: from_json(value) for key, value in data.get("inference_services", {}).items()}
    applied = {}
    for key, saved in data.get("applied", {}).items():
        namespace, _, name = key.partition("/")
        applied[key] = Resource("InferenceService", name, namespace, saved["body"], saved["path"])
    return states, applied


def engines(settings: Settings) -> Engines | None:
    """Real vLLM engines with ``--predictor vllm``; their weights go under ``<state>/models``."""
    if settings.predictor_mode != "vllm":
        return None
    python = vllm_python(settings.project_dir)
    storage = StorageInitializer(python=python, root=settings.state_dir / "models" / "revisions")
    return Engines(settings.project_dir, storage, settings.vllm_model_record)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nexus.local.controller", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--project-dir", type=Path, required=True)
    parser.add_argument("--gitops-repo", type=Path, required=True)
    parser.add_argument("--environment", default="local")
    parser.add_argument("--status-port", type=int, required=True)
    parser.add_argument("--port-base", type=int, default=DEFAULT_BASE)
    parser.add_argument("--port-span", type=int, default=DEFAULT_SPAN)
    parser.add_argument("--api-key-file", type=Path, required=True)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--prometheus-url", default=None)
    parser.add_argument("--predictor", choices=("cpu", "vllm"), default="cpu")
    parser.add_argument("--vllm-model-record", type=Path, default=None,
                        help="--predictor vllm: JSON naming the model engines serve")  # fmt: skip
    parser.add_argument("--services-file", type=Path, default=None,
                        help="the platform services to keep running (save_services)")  # fmt: skip
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between syncs")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    state_dir = args.state_dir.resolve()
    try:
        versions = load_versions(args.project_dir)
    except ResourceError as exc:
        raise SystemExit(f"controller: {exc}") from None
    settings = Settings(
        state_dir=state_dir,
        project_dir=args.project_dir.resolve(),
        environment=args.environment,
        versions=versions,
        api_key=args.api_key_file.read_text().strip(),
        redis_url=args.redis_url,
        prometheus_url=args.prometheus_url,
        predictor_mode=args.predictor,
        vllm_model_record=args.vllm_model_record,
        status_port=args.status_port,
        interval=args.interval,
    )
    if settings.prometheus_url:
        # Loaded at the first reload, which the first sync always makes (reconcile.py).
        prometheus.write_rules(state_dir, settings.project_dir)
    states, remembered = load_states(state_dir)
    registry = CollectorRegistry()
    revision_metrics = RevisionMetrics(registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        book = PortBook(state_dir / "ports.json", base=args.port_base, span=args.port_span)
        workloads = Workloads(supervisor=Supervisor(state_dir), session=session)

        def make_front(isvc: str) -> tuple[Front, web.Application]:
            front = Front(isvc=isvc, session=session, metrics=revision_metrics)
            return front, front_app(front)

        isvcs = IsvcReconciler(
            settings=settings,
            workloads=workloads,
            book=book,
            session=session,
            make_front=make_front,
            states=states,
            remembered=remembered,
            engines=engines(settings),
        )
        platform_services = load_services(args.services_file) if args.services_file else []
        controller = Controller(
            settings=settings,
            workloads=workloads,
            isvcs=isvcs,
            graphs=GraphReconciler(settings=settings, workloads=workloads, book=book),
            targets=TargetsReconciler(settings=settings, session=session),
            services=ServiceReconciler(platform_services, workloads),
            reader=GitReader(args.gitops_repo),
        )
        app = status_app(controller.snapshot)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry), content_type="text/plain")

        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", settings.status_port).start()
        except OSError as exc:
            raise SystemExit(
                f"controller: cannot listen on 127.0.0.1:{settings.status_port}: {exc}"
            ) from None
        try:
            await controller.run(stop)
        finally:
            await workloads.stop_all()
            await isvcs.close()
            await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
