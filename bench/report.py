"""Turn measured cells into medians, ratios and target verdicts; put tables into README.md.

What every benchmark's report shares: each figure printed comes from the run's raw
results; nothing here is typed by hand except the targets, which are issue 11's and named
as such. A benchmark's own table lives with the benchmark (``transformer.markdown``, ...).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import Cell

# Issue 11's targets, relative to the lean floors measured in the same run.
TARGET_TRANSFORMER_RPS_SHARE = 0.6  # of the lean floor with one Redis call
TARGET_ROUTER_RPS_SHARE = 0.8  # of the lean floor
TARGET_ADDED_P50_FACTOR = 1.5  # times the lean floor's added p50 at 1 connection
TARGET_TTFB_MS = 1.0  # first streamed chunk, over direct
# Above this 1-minute load average before the run, other work shares the cores.
BUSY_LOAD = 0.5


@dataclass(frozen=True, slots=True)
class Summary:
    """One target's medians over the rounds; ``added_*`` are against its direct baseline."""

    key: str
    label: str
    route: str
    p50_ms: float | None
    p99_ms: float | None
    rps: float
    p99_32_ms: float | None
    errors: int
    cpu_us_per_request: float | None
    added_p50_ms: float | None
    added_p99_ms: float | None


def summarize(
    rounds: dict[str, list[tuple[Cell, Cell]]],
    *,
    labels: dict[str, tuple[str, str]],
    baselines: dict[str, str | None],
) -> dict[str, Summary]:
    """Medians per target over rounds; added latency = target median - baseline median."""

    def median(key: str, pick: int, attr: str) -> float | None:
        return median_known(getattr(cells[pick], attr) for cells in rounds[key])

    out: dict[str, Summary] = {}
    for key in rounds:
        p50, p99 = median(key, 0, "p50_ms"), median(key, 0, "p99_ms")
        base = baselines[key]
        out[key] = Summary(
            key=key,
            label=labels[key][0],
            route=labels[key][1],
            p50_ms=p50,
            p99_ms=p99,
            rps=median(key, 1, "rps") or 0.0,
            p99_32_ms=median(key, 1, "p99_ms"),
            errors=sum(c.errors for cells in rounds[key] for c in cells),
            cpu_us_per_request=median(key, 1, "cpu_us_per_request"),
            added_p50_ms=_minus(p50, None if base is None else median(base, 0, "p50_ms")),
            added_p99_ms=_minus(p99, None if base is None else median(base, 0, "p99_ms")),
        )
    return out


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def median_known(values: Iterable[float | None]) -> float | None:
    """The median of the figures that were measured (``None``: none was)."""
    known = [v for v in values if v is not None]
    return float(statistics.median(known)) if known else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``None`` unless both sides are positive figures (noise can make an added latency < 0)."""
    if numerator is None or denominator is None or numerator <= 0 or denominator <= 0:
        return None
    return numerator / denominator


Verdict = tuple[str, bool | None]


def floor_verdicts(
    hop: Summary, floor: Summary, *, name: str, floor_name: str, rps_share: float
) -> list[Verdict]:
    """Issue 11's two targets against a lean floor: throughput share, added p50 factor."""
    rps = ratio(hop.rps, floor.rps)
    p50 = ratio(hop.added_p50_ms, floor.added_p50_ms)
    factor = TARGET_ADDED_P50_FACTOR
    return [
        (f"{name} ≥ {rps_share:g}× the {floor_name}'s throughput at 32 connections "  # noqa: RUF001
         f"({hop.rps:,.0f} ÷ {floor.rps:,.0f} req/s = {fmt_ratio(rps)})",
         None if rps is None else rps >= rps_share),
        (f"{name} adds ≤ {factor:g}× the {floor_name}'s p50 at 1 connection "  # noqa: RUF001
         f"({ms(hop.added_p50_ms)} against {ms(floor.added_p50_ms)} = {fmt_ratio(p50)})",
         None if p50 is None else p50 <= factor),
    ]  # fmt: skip


def ttfb_verdict(name: str, rows: list[dict[str, Any]], through: str, direct: str) -> Verdict:
    """Issue 11's streaming target: first chunk through ``through`` within 1 ms of ``direct``."""
    firsts = {row["label"]: row["first_chunk_ms"] for row in rows}
    if firsts.get(through) is None or firsts.get(direct) is None:
        return (f"first streamed chunk through {name} within {TARGET_TTFB_MS:g} ms of direct", None)
    added = firsts[through] - firsts[direct]
    return (
        f"first streamed chunk through {name} within {TARGET_TTFB_MS:g} ms of direct "
        f"({added:+.2f} ms)",
        added <= TARGET_TTFB_MS,
    )


def verdict_lines(verdicts: Iterable[Verdict]) -> list[str]:
    return [
        f"- {text}: {'not measured' if met is None else ('**met**' if met else '**not met**')}"
        for text, met in verdicts
    ]


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} µs"


def fmt_ratio(value: float | None) -> str:
    # Shares near 1 need two places: 0.58 against a 0.6 target must not print as 0.6.
    return "n/a" if value is None else f"{value:.2f}×"  # noqa: RUF001


def times(value: float | None) -> str:
    # The multiplication sign is meant: these are ratios in a human-read table.
    return "n/a" if value is None else f"{value:.1f}×"  # noqa: RUF001


def stream_lines(stream: dict[str, Any]) -> list[str]:
    """The streaming table of a wrk benchmark's section (``harness.Run.measure``)."""
    lines = [
        "",
        f"Streaming ({stream['max_tokens']} tokens, upstream pausing "
        f"{stream['token_latency_ms']:g} ms between tokens, medians of "
        f"{stream['requests']} sequential requests):",
        "",
        "| path | first chunk | whole answer |",
        "|---|--:|--:|",
    ]
    lines += [f"| {r['label']} | {ms(r['first_chunk_ms'])} | {ms(r['total_ms'])} |"
              for r in stream["rows"]]  # fmt: skip
    lines += [f"\n{r['label']} could not stream: `{r['error']}`"
              for r in stream["rows"] if r.get("error")]  # fmt: skip
    return lines


def busy_lines(load: float) -> list[str]:
    """The warning a section carries when the run started on a busy machine."""
    if load <= BUSY_LOAD:
        return []
    return [
        "",
        f"**The machine was busy when this ran (load average {load:g} before the benchmark "
        "started): other work competed for the cores, so latency and throughput understate "
        "every path; CPU per request is the steadier figure. Re-run on an idle machine.**",
    ]


def write_readme(
    readme: Path, section: str, *, start: str, end: str, after: str | None = None
) -> None:
    """Replace what lies between the ``start`` and ``end`` marker lines with ``section``.

    With ``after``, a README without the markers gets them once, right after that line.
    """
    text = readme.read_text()
    if start not in text and after is not None and after in text:
        at = text.index(after) + len(after)
        text = text[:at] + f"\n\n{start}\n{end}" + text[at:]
    at, until = text.find(start), text.find(end)
    if at < 0 or until < at:
        raise SystemExit(f"{readme} has no {start} … {end} section to replace")
    readme.write_text(text[: at + len(start)] + "\n" + section + "\n" + text[until:])
