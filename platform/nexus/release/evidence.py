"""Release evidence a person can look at: the canary judgement as a Markdown report and a chart.

Both are built from what the analysis step already has: its result (``Analysis.to_json``),
the thresholds it judged with, the PromQL of ``analyze.queries`` and, for the chart, the
same PromQL evaluated over the window by ``analyze.series``. The KFP UI shows them as the
analyze step's ``Markdown`` and ``HTML`` output artifacts (``kfp.dsl`` 2.17,
``kfp/dsl/types/artifact_types.py``: ``system.Markdown``, ``system.HTML``; rendered by the
frontend's ``components/viewers/MetricsVisualizations.tsx`` in kubeflow/pipelines; one
file per artifact, hence the SVG inline in the HTML); MLflow keeps them as the release
run's artifacts (``nexus.release.tracking``; its UI previews ``.svg`` and ``.md``, 3.17).

Each threshold is drawn where ``analyze.decide`` puts it: the canary's 5xx ratio may
exceed the stable one's by ``max_error_ratio``; a p95 rolls back above both the stable
p95 times ``max_p95_latency_ratio`` and the stable p95 plus ``LATENCY_FLOOR_S``.
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nexus.release.analyze import LATENCY_FLOOR_S, Series, Thresholds
from nexus.release.gate import GATE_KEY


@dataclass(frozen=True, slots=True)
class Signal:
    key: str
    label: str
    unit: str


SIGNALS: Final = (
    Signal("error_ratio", "5xx ratio", ""),
    Signal("p95_latency_s", "p95 latency", "s"),
    Signal("p95_ttft_s", "p95 time to first token", "s"),
)
ROLES: Final = ("canary", "stable")
_COLOURS: Final = {"canary": "#d95f02", "stable": "#1b9e77", "limit": "#b2182b"}
Points = list[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class Release:
    """Which release the evidence is about (the report's header and the MLflow params)."""

    model: str
    version: str
    environment: str
    canary_percent: int
    git_commit: str = ""
    pipeline_run: str = ""
    # Every traffic step judged, in order (``canary.run_canary``); the last is ``canary_percent``.
    steps: tuple[int, ...] = ()


def window_start(analysis: Mapping[str, Any]) -> float:
    """Where the evidence's time axis starts: the first step's window (or the only one)."""
    end = float(analysis.get("window_end", 0.0))
    return float(analysis.get("span_start", end - float(analysis.get("window_s", 0.0))))


def limits(stable: Mapping[str, Any] | None, thresholds: Thresholds) -> dict[str, float | None]:
    """The value of each signal above which the canary is rolled back (``analyze.decide``)."""
    stable = stable or {}
    found: dict[str, float | None] = {
        "error_ratio": (stable.get("error_ratio") or 0.0) + thresholds.max_error_ratio
    }
    for key in ("p95_latency_s", "p95_ttft_s"):
        value = stable.get(key)
        found[key] = (
            None
            if value is None or value <= 0
            else max(value * thresholds.max_p95_latency_ratio, value + LATENCY_FLOOR_S)
        )
    return found


def role_series(analysis: Mapping[str, Any], measured: Series) -> dict[str, dict[str, Points]]:
    """``{signal: {role: points}}``: the error ratio from the request and 5xx counts."""
    roles = {analysis[role]["revision"]: role for role in ROLES if analysis.get(role) is not None}
    out: dict[str, dict[str, Points]] = {s.key: {} for s in SIGNALS}
    for revision, role in roles.items():
        requests = dict(measured.get("requests", {}).get(revision, []))
        errors = dict(measured.get("errors", {}).get(revision, []))
        # No 5xx series at a time means no 5xx answers yet, not an unknown ratio.
        out["error_ratio"][role] = [
            (t, errors.get(t, 0.0) / n) for t, n in sorted(requests.items()) if n > 0
        ]
        for key in ("p95_latency_s", "p95_ttft_s"):
            out[key][role] = list(measured.get(key, {}).get(revision, []))
    return out


def _value(signal: Signal, value: float | None) -> str:
    if value is None:
        return "no data"
    return f"{value:.3f} {signal.unit}".strip()


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def report(
    release: Release,
    analysis: Mapping[str, Any],
    thresholds: Thresholds,
    promql: Mapping[str, str],
    *,
    note: str = "",
    gate: str = "",
) -> str:
    """The judgement in Markdown: decision, each threshold with both values, counts, window.

    ``gate`` is the quality gate's section (``gate.report_section``), placed in the
    release's order: the gate at 0 % is the first stage, so its verdict comes before the
    traffic steps, and it is all a blocked candidate's report has to say (it never had a
    canary window).
    """
    decision = analysis["decision"]
    reasons = "; ".join(analysis.get("reasons", []))
    lines = [
        f"# Release of {release.model} version {release.version} to {release.environment}: "
        f"{decision}",
        "",
        f"**{decision}**: {reasons}",
        "",
        "| | |",
        "|---|---|",
        f"| model | {release.model} version {release.version} |",
        f"| environment | {release.environment} |",
    ]
    canary, stable = analysis.get("canary"), analysis.get("stable")
    if release.git_commit:
        lines.append(f"| Git commit | `{release.git_commit}` |")
    if release.pipeline_run:
        lines.append(f"| pipeline run | `{release.pipeline_run}` |")
    if canary is not None:
        window_s = float(analysis.get("window_s", 0.0))
        end = analysis.get("window_end")
        span = f"{window_s:.0f} s"
        if end is not None:
            span += f", {_utc(float(end) - window_s)} to {_utc(float(end))}"
        lines += [
            f"| canary | {release.canary_percent} % on `{canary['revision']}` |",
            f"| stable | `{stable['revision'] if stable else '-'}` |",
            f"| window | {span} |",
        ]
    if gate:
        lines += ["", gate.rstrip("\n")]
    if canary is None:
        if not gate:
            lines += ["", "No canary window: nothing was compared."]
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Canary against stable",
        "",
        "| signal | canary | stable | rolled back when the canary is | verdict |",
        "|---|---|---|---|---|",
    ]
    enough = canary["requests"] >= thresholds.min_requests
    counts = [
        f"{side['requests']:.0f} ({side['errors']:.0f} 5xx)" if side else "-"
        for side in (canary, stable)
    ]
    lines.append(
        f"| requests | {counts[0]} | {counts[1]} "
        f"| below {thresholds.min_requests} requests | {'ok' if enough else 'too few'} |"
    )
    rules = {
        "error_ratio": f"above stable + {thresholds.max_error_ratio}",
        "p95_latency_s": f"above stable x {thresholds.max_p95_latency_ratio} "
        f"and stable + {LATENCY_FLOOR_S} s",
    }
    rules["p95_ttft_s"] = rules["p95_latency_s"]
    for signal, limit in zip(SIGNALS, limits(stable, thresholds).values(), strict=True):
        mine = canary.get(signal.key)
        if limit is None or mine is None:
            verdict = "not judged (no value)"
        else:
            verdict = "over" if mine > limit else "ok"
        bound = "" if limit is None else f": {_value(signal, limit)}"
        lines.append(
            f"| {signal.label} | {_value(signal, mine)} "
            f"| {_value(signal, stable.get(signal.key) if stable else None)} "
            f"| {rules[signal.key]}{bound} | {verdict} |"
        )
    lines += _steps(analysis)
    lines += ["", "## PromQL", "", "Evaluated at the window's end, for both revisions:", ""]
    for name, expr in promql.items():
        lines += [f"- {name}:", "", "  ```promql", f"  {expr}", "  ```", ""]
    if note:
        lines += [f"> {note}", ""]
    return "\n".join(lines)


def _steps(analysis: Mapping[str, Any]) -> list[str]:
    """One row per traffic step: its share, window, counts, signals and judgement."""
    steps = analysis.get("steps") or []
    if not steps:
        return []
    lines = ["", "## Steps", "",
             "| step | window | canary requests (5xx) | canary 5xx ratio | canary p95 | "
             "stable p95 | judgement |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for step in steps:
        if step.get(GATE_KEY):
            lines.append(_gate_row(step))
            continue
        canary, stable = step.get("canary") or {}, step.get("stable") or {}
        ratio = canary.get("error_ratio")
        window = f"{float(step['window_s']):.0f} s"
        if step.get("alert"):
            window += f" (cut by {step['alert']})"
        lines.append(
            f"| {step['percent']} % | {window} "
            f"| {canary.get('requests', 0):.0f} ({canary.get('errors', 0):.0f}) "
            f"| {'no data' if ratio is None else f'{ratio:.3f}'} "
            f"| {_value(SIGNALS[1], canary.get('p95_latency_s'))} "
            f"| {_value(SIGNALS[1], stable.get('p95_latency_s'))} "
            f"| {step['decision']}: {'; '.join(step.get('reasons', []))} |"
        )
    return lines


def _gate_row(step: Mapping[str, Any]) -> str:
    """The gate's stage in the steps table: no traffic, judged on the evaluation set."""
    return (f"| 0 % (quality gate) | {float(step['window_s']):.0f} s | no traffic | - | - | - "
            f"| {step['decision']}: {'; '.join(step.get('reasons', []))} |")  # fmt: skip


def chart(
    release: Release,
    analysis: Mapping[str, Any],
    thresholds: Thresholds,
    by_role: Mapping[str, Mapping[str, Points]],
    *,
    note: str = "",
) -> str:
    """Canary against stable over the window, one panel per signal, thresholds dashed (SVG).

    Matplotlib's object API (no pyplot: no global figure registry); the SVG carries no date
    and fixed element ids, so the same numbers give the same bytes.
    """
    import matplotlib
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 3.6), layout="constrained")
    FigureCanvasSVG(figure)
    title = f"{release.model} version {release.version}: {analysis['decision']}"
    if note:
        title += f" ({note})"
    figure.suptitle(title)
    if analysis.get("canary") is None:
        axes = figure.add_subplot()
        axes.axis("off")
        if analysis["decision"] == "blocked":
            why = "blocked at 0 % by the quality gate: no canary window to compare"
        elif analysis.get("steps"):
            why = "no traffic step before 100 %: no canary window to compare"
        else:
            why = "first release: no canary window to compare"
        axes.text(0.5, 0.5, why, ha="center")
    else:
        start = window_start(analysis)
        bounds = limits(analysis.get("stable"), thresholds)
        for index, signal in enumerate(SIGNALS):
            axes = figure.add_subplot(1, len(SIGNALS), index + 1)
            axes.set_title(signal.label)
            axes.set_xlabel("seconds into the canary")
            if signal.unit:
                axes.set_ylabel(signal.unit)
            drawn = False
            for role in ROLES:
                points = by_role.get(signal.key, {}).get(role, [])
                if points:
                    xs = [t - start for t, _ in points]
                    axes.plot(xs, [v for _, v in points], label=role, color=_COLOURS[role])
                    drawn = True
            limit = bounds[signal.key]
            if limit is not None:
                axes.axhline(limit, linestyle="--", color=_COLOURS["limit"], label="rollback above")
            for step in analysis.get("steps") or []:
                begins = float(step["window_end"]) - float(step["window_s"]) - start
                axes.axvline(begins, linestyle=":", color="#777777")
                axes.annotate(f"{step['percent']} %", (begins, 1.0), fontsize="small",
                              xycoords=("data", "axes fraction"), va="top")  # fmt: skip
            if not drawn:
                axes.text(0.5, 0.5, "no samples", ha="center", transform=axes.transAxes)
            axes.set_ylim(bottom=0)
            axes.legend(loc="best", fontsize="small")
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "nexus-release", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def chart_html(svg: str, title: str) -> str:
    """The chart as a page for KFP's HTML viewer (the SVG inline, its XML prolog dropped)."""
    inline = svg[svg.index("<svg") :]
    head = f'<meta charset="utf-8"><title>{html.escape(title)}</title>'
    return f"<!doctype html>\n<html><head>{head}</head>\n<body>\n{inline}</body></html>\n"
