"""What the controller's reconcilers share: the settings, process names, one converge step.

As in controller-runtime, each kind has its own reconciler, owning its objects and
nothing else: ``IsvcReconciler`` (InferenceServices: revisions, their processes, the
fronts), ``GraphReconciler`` (InferenceGraphs: one router each), ``ServiceReconciler``
(the platform's MLflow, Redis and Prometheus) and ``TargetsReconciler`` (Prometheus'
scrape targets, from what the others run). ``controller.Controller`` runs them in turn
every pass, after one ``Workloads.probe`` of every process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from nexus.local.resources import PredictorMode
from nexus.local.supervisor import Service
from nexus.local.workloads import Workloads


@dataclass(frozen=True, slots=True)
class Settings:
    state_dir: Path
    project_dir: Path
    api_key: str
    status_port: int
    versions: Mapping[str, str] = field(default_factory=dict)  # platform/versions.yaml
    environment: str = "local"
    redis_url: str | None = None
    prometheus_url: str | None = None
    predictor_mode: PredictorMode = "cpu"
    interval: float = 1.0
    vllm_model_record: Path | None = None  # the CPU model every vLLM engine serves


async def converge(workloads: Workloads, service: Service) -> None:
    """Run ``service``: a process of that name running another command is replaced."""
    current = workloads.get(service.name)
    if current is not None and current.service != service:
        await workloads.stop(service.name)
    workloads.ensure(service)


def process_names(revision: str) -> tuple[str, str]:
    """(worker, transformer) process names of a predictor revision."""
    isvc, _, number = revision.rpartition("-predictor-")
    return revision, f"{isvc}-transformer-{number}"
