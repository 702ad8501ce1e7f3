"""Alerts and dashboard: promtool accepts and unit-tests the rules, and every query reads
only series that something Nexus ships or runs exports: the families the transformer and
router register (read back from their registries), the recording rules, and the external
series ``nexus.manifests.metric_names`` declares with their sources."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from nexus.manifests.metric_names import (
    EXTERNAL_METRICS,
    QUEUE_PROXY_DURATION,
    QUEUE_PROXY_DURATION_BY_KNATIVE,
    queue_proxy_duration,
)
from tests.manifests.conftest import REPO_ROOT
from tests.support.metric_families import exported_series, router_families, transformer_families

MONITORING = REPO_ROOT / "platform" / "k8s" / "monitoring"
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool"
PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
     "bool", "offset", "inf", "nan"}
)  # fmt: skip


def _rule_spec() -> dict[str, Any]:
    doc = yaml.safe_load((MONITORING / "nexus.prometheusrule.yaml").read_text(encoding="utf-8"))
    return doc["spec"]  # type: ignore[no-any-return]


def _dashboard() -> dict[str, Any]:
    doc = yaml.safe_load((MONITORING / "nexus-dashboard.configmap.yaml").read_text("utf-8"))
    assert doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = doc["data"].values()
    return json.loads(text)  # type: ignore[no-any-return]


def metric_names(expr: str) -> set[str]:
    """Series names a PromQL expression reads (labels, functions and keywords removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def _rule_exprs() -> list[str]:
    return [rule["expr"] for group in _rule_spec()["groups"] for rule in group["rules"]]


def _recorded() -> set[str]:
    return {r["record"] for g in _rule_spec()["groups"] for r in g["rules"] if "record" in r}


def _dashboard_exprs() -> list[str]:
    dash = _dashboard()
    exprs = [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    for var in dash["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            inner = re.match(r"label_values\((\w+),", query["query"])
            assert inner, query
            exprs.append(inner.group(1))
    return exprs


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (isvc, le) (rate(x_bucket{status=~"5.."}[5m]))) '
        "> on (ns) group_left () min by (ns) (vllm:y) + 0.02"
    )
    assert metric_names(expr) == {"x_bucket", "vllm:y"}


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_queries_use_only_exported_metrics(source: str) -> None:
    exprs = _rule_exprs() if source == "rules" else _dashboard_exprs()
    allowed = exported_series() | EXTERNAL_METRICS.keys() | _recorded()
    used = set().union(*(metric_names(e) for e in exprs))
    assert used - allowed == set()
    assert used  # the extraction found something to check


def test_the_contract_is_what_the_servers_register() -> None:
    """The series the check above allows come from the registries, so a family renamed in
    code and not in a query fails it: e.g. the transformer's request counter."""
    assert "nexus_transformer_requests_total" in exported_series()
    assert "nexus_router_requests_total" in exported_series()
    assert "nexus_transformer_request_duration_seconds_bucket" in exported_series()
    assert not {n for n in exported_series() if n.endswith("_total_total")}


def test_every_declared_external_series_is_queried() -> None:
    """A declared external series nobody queries is a dead entry in the contract."""
    used = set().union(*(metric_names(e) for e in (*_rule_exprs(), *_dashboard_exprs())))
    assert set(EXTERNAL_METRICS) - used - {f"{QUEUE_PROXY_DURATION}_sum"} == set()


def test_dashboard_covers_every_exported_family_and_required_panel() -> None:
    used = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    # The router's own families are per-graph detail, read from its /metrics directly;
    # the dashboard shows the one a user of a graph feels: fallbacks taken.
    shown = [*transformer_families(), *(f for f in router_families() if "fallback" in f.name)]
    for family in shown:
        assert set(family.series) & used, family.name
    titles = " | ".join(p["title"].lower() for p in _dashboard()["panels"])
    for needed in ("requests/s", "5xx", "request latency p95", "upstream latency p95",
                   "upstream errors", "rate-limited", "circuit", "fallback", "in-flight",
                   "tokens/s", "time to first token"):  # fmt: skip
        assert needed in titles, needed


def test_alerts_cover_the_required_conditions() -> None:
    alerts = {r["alert"] for g in _rule_spec()["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "NexusHigh5xxRatio",
        "NexusCircuitOpen",
        "NexusLimiterDegraded",
        "NexusHighP95Latency",
        "NexusCanaryErrorRatioAboveStable",
    } <= alerts


@pytest.fixture
def promtool_dir(tmp_path: Path) -> Path:
    assert shutil.which("promtool"), "promtool missing: `make system-deps` installs prometheus"
    (tmp_path / "nexus.rules.yaml").write_text(yaml.safe_dump(_rule_spec()), encoding="utf-8")
    for test_file in PROMTOOL_TESTS.glob("*.test.yaml"):
        shutil.copy(test_file, tmp_path / test_file.name)
    return tmp_path


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules(promtool_dir: Path) -> None:
    result = _promtool("check", "rules", "nexus.rules.yaml", cwd=promtool_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests(promtool_dir: Path) -> None:
    tests = sorted(p.name for p in promtool_dir.glob("*.test.yaml"))
    assert tests
    result = _promtool("test", "rules", *tests, cwd=promtool_dir)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_can_fail(promtool_dir: Path) -> None:
    # A broken threshold must make the unit tests fail, or they prove nothing.
    rules = (promtool_dir / "nexus.rules.yaml").read_text(encoding="utf-8")
    (promtool_dir / "nexus.rules.yaml").write_text(rules.replace("> 0.05", "> 0.5"), "utf-8")
    result = _promtool("test", "rules", "nexus.rules.test.yaml", cwd=promtool_dir)
    assert result.returncode != 0


def test_queue_proxy_series_are_the_declared_knatives() -> None:
    """The rules read the name the Knative of platform/versions.yaml exports, exactly."""
    versions = yaml.safe_load((REPO_ROOT / "platform" / "versions.yaml").read_text("utf-8"))
    declared = queue_proxy_duration(str(versions["knative_serving"]))
    assert declared.name == QUEUE_PROXY_DURATION
    # Whole seconds would put every sub-second answer in the 0 s bucket (p95 reads 0).
    assert not declared.whole_seconds
    used = set().union(*(metric_names(e) for e in _rule_exprs()))
    assert f"{QUEUE_PROXY_DURATION}_count" in used
    assert f"{QUEUE_PROXY_DURATION}_bucket" in used
    assert not {n for n in used if n.startswith("revision_app_")}, "pre-1.19 names"


@pytest.mark.parametrize(
    ("version", "name", "whole_seconds"),
    [
        # knative/serving tags, pkg/queue/request_metric.go: name and `elapsedTime :=`.
        ("1.19.0", "kn_queueproxy_app_duration_seconds", True),
        ("1.19.7", "kn_queueproxy_app_duration_seconds", True),
        ("1.19.8", "kn_serving_invocation_duration_seconds", True),  # rename backported
        ("1.19.9", "kn_serving_invocation_duration_seconds", False),  # #16359 backported
        ("1.20.0", "kn_queueproxy_app_duration_seconds", True),
        ("1.20.1", "kn_serving_invocation_duration_seconds", True),  # rename backported
        ("1.20.2", "kn_serving_invocation_duration_seconds", False),
        ("1.21.0", "kn_serving_invocation_duration_seconds", False),
        ("knative-v1.21.1", "kn_serving_invocation_duration_seconds", False),
    ],
)
def test_queue_proxy_metric_per_patch(version: str, name: str, whole_seconds: bool) -> None:
    found = queue_proxy_duration(version)
    assert (found.name, found.whole_seconds) == (name, whole_seconds)


def test_queue_proxy_metric_of_an_unread_release_is_refused() -> None:
    # A minor version is not enough: 1.19 and 1.20 exported both names.
    for version in ("1.19", "1.20", "1.22.0"):
        with pytest.raises(ValueError, match="no queue-proxy metric known"):
            queue_proxy_duration(version)
    assert "1.19" not in QUEUE_PROXY_DURATION_BY_KNATIVE


def test_knative_exports_request_metrics_for_prometheus_to_scrape() -> None:
    """config-observability turns the queue-proxy's exporter on; the PodMonitor scrapes it."""
    cluster = REPO_ROOT / "platform" / "k8s" / "cluster"
    config = yaml.safe_load((cluster / "config-observability.configmap.yaml").read_text("utf-8"))
    assert config["metadata"] == {"name": "config-observability", "namespace": "knative-serving"}
    assert config["data"] == {"request-metrics-protocol": "prometheus"}
    kustomization = yaml.safe_load((cluster / "kustomization.yaml").read_text("utf-8"))
    assert "config-observability.configmap.yaml" in kustomization["resources"]
    monitor = yaml.safe_load((MONITORING / "predictors.podmonitor.yaml").read_text("utf-8"))
    (queue_proxy,) = [e for e in monitor["spec"]["podMetricsEndpoints"]
                      if e["port"] == "http-usermetric"]  # fmt: skip
    targets = {r["targetLabel"]: r["sourceLabels"] for r in queue_proxy["relabelings"]}
    assert targets["revision"] == ["__meta_kubernetes_pod_label_serving_knative_dev_revision"]
    assert targets["isvc"] == ["__meta_kubernetes_pod_label_serving_kserve_io_inferenceservice"]
