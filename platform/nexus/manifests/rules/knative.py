"""Knative rules: what Knative's webhook refuses and what its defaults silently do.

Each check encodes Knative Serving at ``knative-v1.21.1`` (the release KServe 0.21's go.mod
names; ``platform/versions.yaml``) through ``nexus.manifests.admission``:

- ``knative-port-name``: the serving port may only be named ``""``, ``h2c`` or ``http1``;
- ``knative-timeout``: ``timeout`` above ``max-revision-timeout-seconds`` is refused, and an
  unset one leaves ``revision-timeout-seconds`` (300 s, a total timer that also ends streams);
- ``router-timeouts``: a graph's ``routerTimeouts`` cannot outlast the graph's own timeout;
- ``startup-budget``: the startup probe must give up before the progress deadline;
- ``cluster-local``: an InferenceService without the visibility label gets public hosts;
- ``graph-cluster-local``: so does a graph's router, whose Knative Service carries the
  graph's own labels only (KServe ``pkg/controller/v1alpha1/inferencegraph/
  knative_reconciler.go``, ``createKnativeService``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from nexus.manifests import admission
from nexus.manifests.context import SERVERLESS_MODES, LintContext
from nexus.manifests.documents import Document
from nexus.manifests.findings import Finding
from nexus.manifests.rules.anatomy import serving
from nexus.manifests.rules.inference_service import components, deployment_mode

VISIBILITY_LABEL = "networking.knative.dev/visibility"
ROUTER_TIMEOUTS = ("serverRead", "serverWrite", "serverIdle", "serviceClient")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def _knative(doc: Document, ctx: LintContext) -> bool:
    """KServe makes Knative revisions for it (Knative mode, or no mode known at all)."""
    mode = deployment_mode(doc, ctx)
    return mode is None or mode in SERVERLESS_MODES


def _port_names(
    owner: Document, containers: Any, field: str, prefix: str = ""
) -> Iterator[Finding]:
    for index, container in enumerate(containers or []):
        ports = container.get("ports") if isinstance(container, dict) else None
        if not isinstance(ports, list) or not ports or not isinstance(ports[0], dict):
            continue
        where = f"{field}[{index}].ports[0].name"
        refusal = admission.port_name_refusal(str(ports[0].get("name") or ""), where)
        if refusal:
            yield owner.finding(
                where,
                "knative-port-name",
                f"{prefix}Knative refuses the revision: {refusal.splitlines()[0]} (only '', "
                "'h2c' or 'http1'; KServe copies runtime ports into the Knative Service)",
                "remove the port's name (or name it http1 for HTTP/1.1, h2c for HTTP/2)",
            )


def _check_ports(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    if doc.kind in ("ServingRuntime", "ClusterServingRuntime"):
        yield from _port_names(doc, doc.spec.get("containers"), "spec.containers")
        return
    if not _knative(doc, ctx):
        return
    for name, spec in components(doc):
        yield from _port_names(doc, spec.get("containers"), f"spec.{name}.containers")
    found = serving(doc, ctx)
    if found is not None and found.runtime_container is not None:
        # Reported here too, so that linting only the InferenceService shows why it fails.
        for finding in _port_names(doc, [found.runtime_container], "spec.containers"):
            yield doc.finding(
                f"{found.field}.runtime",
                finding.rule,
                f"runtime {found.runtime_name}: {finding.message}",
                f"in ServingRuntime {found.runtime_name}: {finding.fix}",
            )


def _timeout(doc: Document, field: str, value: Any, maximum: int) -> Iterator[Finding]:
    if not isinstance(value, int) or isinstance(value, bool):
        return
    refusal = admission.timeout_refusal(value, max_revision_timeout_seconds=maximum)
    if refusal:
        yield doc.finding(
            field,
            "knative-timeout",
            f"Knative refuses the revision: {refusal} (max-revision-timeout-seconds is {maximum})",
            f"set {field} to at most {maximum}, or raise max-revision-timeout-seconds in "
            "knative-serving/config-defaults",
        )


def _unset(doc: Document, field: str, default: int) -> Finding:
    return doc.finding(
        field,
        "knative-timeout",
        f"no timeout: Knative's revision-timeout-seconds ({default} s) ends every request, "
        "streamed generations included",
        f"set {field} (seconds, at most max-revision-timeout-seconds) to the longest "
        "generation you serve",
    )


def _check_isvc_timeouts(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    if not _knative(doc, ctx):
        return
    maximum = ctx.max_revision_timeout()
    for name, spec in components(doc):
        if "timeout" in spec:
            yield from _timeout(doc, f"spec.{name}.timeout", spec["timeout"], maximum)
        else:
            yield _unset(doc, f"spec.{name}.timeout", ctx.revision_timeout())


def _check_graph_timeouts(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    maximum = ctx.max_revision_timeout()
    timeout = doc.spec.get("timeout")
    if timeout is None:
        yield _unset(doc, "spec.timeout", ctx.revision_timeout())
    else:
        yield from _timeout(doc, "spec.timeout", timeout, maximum)
    effective = timeout if isinstance(timeout, int) and timeout > 0 else ctx.revision_timeout()
    effective = min(effective, maximum)
    router = doc.spec.get("routerTimeouts")
    if not isinstance(router, dict):
        return
    for key in ROUTER_TIMEOUTS:
        value = router.get(key)
        if isinstance(value, int) and value > effective:
            yield doc.finding(
                f"spec.routerTimeouts.{key}",
                "router-timeouts",
                f"routerTimeouts.{key} is {value} s but Knative ends the graph's requests "
                f"after {effective} s (spec.timeout, else revision-timeout-seconds), so it "
                "can never take effect",
                f"lower {key} to at most {effective}, or raise spec.timeout (at most {maximum})",
            )


def duration_seconds(text: str) -> int | None:
    """A Go duration as Knative accepts it for the progress deadline ("600s", "30m")."""
    match = _DURATION.match(text.strip())
    if match is None or not any(match.groups()):
        return None
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def probe_budget(probe: Mapping[str, Any]) -> int:
    """Seconds a startup probe waits before the kubelet gives up (Kubernetes' defaults)."""
    delay = int(probe.get("initialDelaySeconds") or 0)
    period = int(probe.get("periodSeconds") or 10)
    failures = int(probe.get("failureThreshold") or 3)
    return delay + period * failures


def progress_deadline(doc: Document, ctx: LintContext) -> tuple[int, str]:
    """The predictor revision's deadline (seconds) and where it comes from."""
    predictor = doc.spec.get("predictor")
    for source, found in (
        ("spec.predictor.annotations", (predictor or {}).get("annotations")),
        ("metadata.annotations", doc.annotations),
    ):
        if isinstance(found, dict):
            raw = found.get(admission.PROGRESS_DEADLINE_ANNOTATION)
            if raw is not None and (seconds := duration_seconds(str(raw))) is not None:
                return seconds, source
    raw = ctx.knative_setting("config-deployment", "progress-deadline")
    if raw and (seconds := duration_seconds(raw)) is not None:
        return seconds, "knative-serving/config-deployment"
    return admission.DEFAULT_PROGRESS_DEADLINE_SECONDS, "Knative's default"


def _check_startup(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    found = serving(doc, ctx)
    if found is None or not _knative(doc, ctx):
        return
    probe = found.container.get("startupProbe")
    where = f"{found.field}.startupProbe"
    if not isinstance(probe, dict) and found.runtime_container is not None:
        probe = found.runtime_container.get("startupProbe")
        where = f"ServingRuntime {found.runtime_name} startupProbe"
    if not isinstance(probe, dict):
        return
    budget = probe_budget(probe)
    deadline, source = progress_deadline(doc, ctx)
    if budget >= deadline:
        yield doc.finding(
            "spec.predictor.annotations.serving.knative.dev/progress-deadline",
            "startup-budget",
            f"the startup probe ({where}) allows {budget} s, but Knative fails the revision "
            f"after its progress deadline of {deadline} s ({source}), which must also cover "
            "the storage initializer's download",
            f"annotate spec.predictor with {admission.PROGRESS_DEADLINE_ANNOTATION}: "
            f'"{budget + 900}s" (probe budget plus the download), or shorten the probe',
        )


def _check_visibility(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    labels = doc.metadata.get("labels")
    value = labels.get(VISIBILITY_LABEL) if isinstance(labels, dict) else None
    if value != "cluster-local" and _knative(doc, ctx):
        yield doc.finding(
            f"metadata.labels.{VISIBILITY_LABEL}",
            "cluster-local",
            "without the cluster-local label KServe gives the predictor and transformer "
            "public hosts on the ingress gateway, so clients can skip the transformer's "
            "authentication (KServe ingress_reconciler.go)",
            f"label the InferenceService {VISIBILITY_LABEL}: cluster-local and expose it "
            "through a graph",
        )


def _check_graph_visibility(doc: Document, ctx: LintContext) -> Iterator[Finding]:
    labels = doc.metadata.get("labels")
    value = labels.get(VISIBILITY_LABEL) if isinstance(labels, dict) else None
    if value != "cluster-local" and _knative(doc, ctx):
        yield doc.finding(
            f"metadata.labels.{VISIBILITY_LABEL}",
            "graph-cluster-local",
            "KServe copies only the graph's own labels to the router's Knative Service "
            "(inferencegraph/knative_reconciler.go createKnativeService), so without the "
            "cluster-local label the router gets a public route on Knative's ingress "
            "gateway, beside the TLS Gateway",
            f"label the InferenceGraph {VISIBILITY_LABEL}: cluster-local and expose it "
            "through the nexus-graphs VirtualService",
        )


def check(docs: Sequence[Document], ctx: LintContext) -> list[Finding]:
    findings: list[Finding] = []
    for doc in docs:
        if doc.kind in ("ServingRuntime", "ClusterServingRuntime"):
            findings.extend(_check_ports(doc, ctx))
        elif doc.kind == "InferenceService":
            findings.extend(_check_ports(doc, ctx))
            findings.extend(_check_isvc_timeouts(doc, ctx))
            findings.extend(_check_startup(doc, ctx))
            findings.extend(_check_visibility(doc, ctx))
        elif doc.kind == "InferenceGraph":
            findings.extend(_check_graph_timeouts(doc, ctx))
            findings.extend(_check_graph_visibility(doc, ctx))
    return findings
