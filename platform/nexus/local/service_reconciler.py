"""The platform's own services (MLflow, Redis, Prometheus), supervised by the controller.

In a cluster these are Deployments: a killed MLflow, Redis or Prometheus pod is restarted
by its ReplicaSet and kubelet, and ``kubectl get pods`` shows it restarting meanwhile.
Locally ``nexus up`` writes their commands to ``<state>/controller/services.json``
(``supervisor.save_services``) and the controller runs them through the same
``Workloads`` as the model processes: restarted at once, then after a back-off that
doubles, ``CrashLoopBackOff`` after three quick exits.
Their state is served as Pods of the ``nexus-system`` namespace (``status.ServiceView``).
"""

from __future__ import annotations

from collections.abc import Sequence

from nexus.local.status import ServiceState, ServiceView
from nexus.local.supervisor import Service
from nexus.local.workloads import Workload, Workloads


def state_of(workload: Workload) -> tuple[ServiceState, str | None]:
    """Kubernetes' words for a container: running (ready or not yet), or waiting and why."""
    if workload.process is not None:
        return ("Running" if workload.ready else "Starting"), None
    if workload.failure:
        return "CrashLoopBackOff", workload.failure
    return "Restarting", workload.last_exit


class ServiceReconciler:
    """Keeps each platform service running; ``ready`` once all answered their probe."""

    def __init__(self, services: Sequence[Service], workloads: Workloads) -> None:
        self.services = tuple(services)
        self.workloads = workloads
        self.started = not self.services  # every service was ready at least once

    def apply(self) -> None:
        """Start what is missing; ``Workloads.probe`` (run by the caller) restarts exits."""
        for service in self.services:
            self.workloads.ensure(service)
        if not self.started:
            self.started = all(view.ready for view in self.views())

    def waiting_for(self) -> list[str]:
        return [view.name for view in self.views() if not view.ready]

    def views(self) -> tuple[ServiceView, ...]:
        found = []
        for service in self.services:
            workload = self.workloads.get(service.name)
            if workload is None:
                found.append(ServiceView(service.name, service.port, "Starting", False, 0))
                continue
            state, message = state_of(workload)
            ready = workload.ready and workload.process is not None
            found.append(ServiceView(service.name, service.port, state, ready,
                                     workload.restarts, message))  # fmt: skip
        return tuple(found)
