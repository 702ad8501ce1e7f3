"""Prometheus for the local platform: a generated config and a reload after every change.

Targets carry the labels a cluster's PodMonitors give (``isvc``, ``revision``,
``component``, ``graph``), so the dashboards' and the canary analysis' PromQL reads
the same on one machine. The controller rewrites ``prometheus.yml`` when processes come
and go and asks Prometheus to reload (``--web.enable-lifecycle``).

The rules are the shipped PrometheusRule's (``SHIPPED_RULES``): at start the controller
writes its ``spec`` (the ``groups`` of a Prometheus rules file, which is what the
Prometheus Operator mounts for a cluster's Prometheus) to ``rules/nexus.yml`` beside the
config, so the same recording rules and alerts evaluate here, ``ALERTS`` included (what
a release's alert watch reads, ``nexus.release.canary``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from nexus.local import atomic_file

SCRAPE_INTERVAL = "5s"
SHIPPED_RULES = Path("platform/k8s/monitoring/nexus.prometheusrule.yaml")
RULES_FOLDER = "rules"


@dataclass(frozen=True, slots=True)
class Target:
    address: str
    component: str
    labels: Mapping[str, str] = field(default_factory=dict)


def render(targets: Sequence[Target]) -> str:
    """``prometheus.yml`` with one job per component; deterministic for change detection."""
    jobs: dict[str, list[Target]] = {}
    for target in targets:
        jobs.setdefault(target.component, []).append(target)
    scrape_configs = [
        {
            "job_name": component,
            "static_configs": [
                {
                    "targets": [t.address],
                    "labels": {"component": component, **dict(sorted(t.labels.items()))},
                }
                for t in sorted(group, key=lambda t: t.address)
            ],
        }
        for component, group in sorted(jobs.items())
    ]
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        # Relative to this file's folder (Prometheus resolves rule_files so).
        "rule_files": [f"{RULES_FOLDER}/*.yml"],
        "scrape_configs": scrape_configs,
    }
    header = "# Written by the Nexus local controller; rewritten when processes change.\n"
    return header + yaml.safe_dump(config, sort_keys=False)


def write_rules(state_dir: Path, project_dir: Path) -> Path:
    """The shipped PrometheusRule's groups as the rules file the config loads; its path."""
    source = project_dir / SHIPPED_RULES
    resource = yaml.safe_load(source.read_text(encoding="utf-8"))
    target = state_dir / "prometheus" / RULES_FOLDER / "nexus.yml"
    header = f"# The groups of {SHIPPED_RULES}, written by the Nexus local controller.\n"
    text = header + yaml.safe_dump({"groups": resource["spec"]["groups"]}, sort_keys=False)
    atomic_file.write_text(target, text)
    return target


def command(binary: str, state_dir: Path, port: int) -> list[str]:
    folder = state_dir / "prometheus"
    return [
        binary,
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
        "--storage.tsdb.retention.time=7d",
    ]


async def reload(session: aiohttp.ClientSession, url: str) -> str | None:
    """Ask Prometheus to re-read its config; the error text, or ``None`` on success."""
    try:
        async with session.post(url.rstrip("/") + "/-/reload") as response:
            if response.status >= 300:
                return f"reload answered {response.status}: {await response.text()}"
    except aiohttp.ClientError as exc:
        return f"reload failed: {exc}"
    return None
