"""The InferenceGraph reconciler: one router per graph, and Prometheus' targets.

``GraphReconciler`` runs KServe's router for each InferenceGraph of the commit (our
``nexus.router`` with ``--host-map`` pointing each InferenceService's cluster host at its
front), restarts it when its graph or host map changes, and stops the routers of removed
graphs (Argo CD's automated prune). ``TargetsReconciler`` writes Prometheus' scrape
targets from what the other reconcilers run and asks Prometheus to reload.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field

import aiohttp
import yaml

from nexus.errors import PlatformError
from nexus.local import atomic_file, prometheus
from nexus.local.ports import PortBook
from nexus.local.reconcile import Settings, converge
from nexus.local.resources import Resource
from nexus.local.status import GraphView
from nexus.local.supervisor import Service
from nexus.local.workloads import Workloads

PROPAGATE_HEADERS = "Authorization,X-Api-Key,X-Request-Id,traceparent"


@dataclass(slots=True)
class GraphRun:
    resource: Resource
    error: str | None = None
    port: int | None = None


def router_name(resource: Resource) -> str:
    return f"router-{resource.name}"


@dataclass(slots=True)
class GraphReconciler:
    settings: Settings
    workloads: Workloads
    book: PortBook
    graphs: dict[str, GraphRun] = field(default_factory=dict)
    wanted: set[str] = field(default_factory=set)

    def desire(self, graphs: list[Resource]) -> None:
        for resource in graphs:
            self.graphs.setdefault(resource.key, GraphRun(resource)).resource = resource
        self.wanted = {r.key for r in graphs}

    async def apply(self, hosts: dict[str, int]) -> None:
        """Converge on the graphs; ``hosts``: cluster host -> port of its front."""
        for key in list(self.graphs):
            if key in self.wanted:
                await self._graph(self.graphs[key], hosts)
            else:
                await self.workloads.stop(router_name(self.graphs.pop(key).resource))

    async def _graph(self, run: GraphRun, hosts: dict[str, int]) -> None:
        res = run.resource
        try:
            text = yaml.safe_dump(dict(res.body), sort_keys=False)
            path = self.settings.state_dir / "routers" / f"{res.namespace}.{res.name}.yaml"
            atomic_file.write_text(path, text)
            name = router_name(res)
            port = self.book.allocate(name)
            host_map = []
            for host, front in hosts.items():
                host_map += ["--host-map", f"{host}=127.0.0.1:{front}"]
            args = [
                *(sys.executable, "-m", "nexus.router", "--graph-file", str(path)),
                *("--port", str(port), "--host", "127.0.0.1", "--drain-seconds", "0"),
                *("--status-policy", "client"),
                *host_map,
            ]
            digest = hashlib.sha256(text.encode()).hexdigest()[:16]
            env = {"PROPAGATE_HEADERS": PROPAGATE_HEADERS, "NEXUS_GRAPH_DIGEST": digest}
            ready = f"http://127.0.0.1:{port}/readyz"
            await converge(self.workloads, Service(name, args, port, ready, env))
            run.port = port
            workload = self.workloads.get(name)
            run.error = workload.failure if workload else None
        except (PlatformError, OSError) as exc:
            run.error = str(exc)

    def targets(self) -> list[prometheus.Target]:
        return [
            prometheus.Target(f"127.0.0.1:{run.port}", "router", {"graph": run.resource.name})
            for run in self.graphs.values()
            if run.port is not None
        ]

    def views(self) -> tuple[GraphView, ...]:
        graphs = []
        for graph in self.graphs.values():
            workload = self.workloads.get(router_name(graph.resource))
            ready = workload is not None and workload.ready and workload.failure is None
            error = graph.error or (workload.failure if workload else None)
            url = f"http://127.0.0.1:{graph.port}" if graph.port else None
            graphs.append(GraphView(graph.resource, url, ready, error))
        return tuple(graphs)


@dataclass(slots=True)
class TargetsReconciler:
    """Prometheus' ``prometheus.yml``: the front, then every target the others report."""

    settings: Settings
    session: aiohttp.ClientSession
    written: str = ""

    async def apply(self, targets: list[prometheus.Target]) -> None:
        if not self.settings.prometheus_url:
            return
        front = prometheus.Target(f"127.0.0.1:{self.settings.status_port}", "front")
        text = prometheus.render([front, *targets])
        if text != self.written:
            atomic_file.write_text(self.settings.state_dir / "prometheus" / "prometheus.yml", text)
            if await prometheus.reload(self.session, self.settings.prometheus_url) is None:
                self.written = text
