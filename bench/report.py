"""Turn the measured cells into medians, ratios, target verdicts and the README's Markdown.

Every figure printed comes from the run's raw results; nothing here is typed by hand
except the targets, which are issue 2's and named as such.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from load import Cell

START = "<!-- bench:transformer:start -->"
END = "<!-- bench:transformer:end -->"

# Issue 2's targets for the transformer: a 2-core machine, one worker process.
TARGET_ADDED_P50_MS = 0.4
TARGET_RPS = 5_000
TARGET_VS_LITELLM_RPS = 25
TARGET_VS_LITELLM_LATENCY = 10
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
        return _median_known(getattr(cells[pick], attr) for cells in rounds[key])

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


def _median_known(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(statistics.median(known)) if known else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``None`` unless both sides are positive figures (noise can make an added latency < 0)."""
    if numerator is None or denominator is None or numerator <= 0 or denominator <= 0:
        return None
    return numerator / denominator


def ratios(s: dict[str, Summary]) -> dict[str, float | None]:
    nexus, litellm, kserve, nexus_v1 = (
        s.get(k) for k in ("nexus-openai", "litellm-openai", "kserve-v1", "nexus-v1")
    )

    def get(summary: Summary | None, attr: str) -> float | None:
        return None if summary is None else getattr(summary, attr)

    return {
        "nexus_rps_over_litellm": ratio(get(nexus, "rps"), get(litellm, "rps")),
        "litellm_added_p50_over_nexus": ratio(
            get(litellm, "added_p50_ms"), get(nexus, "added_p50_ms")
        ),
        "litellm_cpu_over_nexus": ratio(
            get(litellm, "cpu_us_per_request"), get(nexus, "cpu_us_per_request")
        ),
        "nexus_v1_rps_over_kserve": ratio(get(nexus_v1, "rps"), get(kserve, "rps")),
        "kserve_added_p50_over_nexus_v1": ratio(
            get(kserve, "added_p50_ms"), get(nexus_v1, "added_p50_ms")
        ),
    }


def verdicts(s: dict[str, Summary], r: dict[str, float | None]) -> list[tuple[str, bool | None]]:
    """Issue 2's targets, each met (True), missed (False) or not measured (None)."""
    nexus = s["nexus-openai"]
    added = nexus.added_p50_ms
    litellm = s.get("litellm-openai")
    latency_met: bool | None = None
    if litellm is not None and litellm.added_p50_ms is not None and added is not None:
        latency_met = added < litellm.added_p50_ms / TARGET_VS_LITELLM_LATENCY
    vs_rps = r["nexus_rps_over_litellm"]
    return [
        (
            f"added p50 ≤ {TARGET_ADDED_P50_MS} ms (measured {_ms(added)})",
            added is not None and added <= TARGET_ADDED_P50_MS,
        ),
        (
            f"≥ {TARGET_RPS:,} req/s at 32 connections (measured {nexus.rps:,.0f})",
            nexus.rps >= TARGET_RPS,
        ),
        (
            f"≥ {TARGET_VS_LITELLM_RPS}× LiteLLM's throughput (measured {_times(vs_rps)})",  # noqa: RUF001
            None if vs_rps is None else vs_rps >= TARGET_VS_LITELLM_RPS,
        ),
        (
            f"< 1/{TARGET_VS_LITELLM_LATENCY} of LiteLLM's added p50 "
            f"(LiteLLM ÷ Nexus {_times(r['litellm_added_p50_over_nexus'])})",
            latency_met,
        ),
    ]


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} µs"


def _times(value: float | None) -> str:
    # The multiplication sign is meant: these are ratios in a human-read table.
    return "n/a" if value is None else f"{value:.1f}×"  # noqa: RUF001


def markdown(results: dict[str, Any], s: dict[str, Summary]) -> str:
    """The README section: table, ratios, streaming, targets and how it was measured."""
    r = ratios(s)
    lines = [
        "| path | route | p50 @1 conn | p99 @1 conn | added p50 | added p99 "
        "| req/s @32 conn | p99 @32 conn | CPU per request |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for x in s.values():
        lines.append(
            f"| {x.label} | {x.route} | {_ms(x.p50_ms)} | {_ms(x.p99_ms)} "
            f"| {_ms(x.added_p50_ms)} | {_ms(x.added_p99_ms)} | {x.rps:,.0f} "
            f"| {_ms(x.p99_32_ms)} | {_us(x.cpu_us_per_request)} |"
        )
    failed = [x.label + " (" + x.route + ")" for x in s.values() if x.errors]
    if failed:
        lines += ["", f"**Some requests failed** (non-2xx or socket errors): {', '.join(failed)}."]
    lines += [
        "",
        f"Ratios: Nexus ÷ LiteLLM throughput {_times(r['nexus_rps_over_litellm'])}; "
        f"LiteLLM ÷ Nexus added p50 {_times(r['litellm_added_p50_over_nexus'])}; "
        f"LiteLLM ÷ Nexus CPU per request {_times(r['litellm_cpu_over_nexus'])}; "
        f"Nexus ÷ `kserve.Model` throughput on the v1 route "
        f"{_times(r['nexus_v1_rps_over_kserve'])}; `kserve.Model` ÷ Nexus added p50 on the "
        f"v1 route {_times(r['kserve_added_p50_over_nexus_v1'])}.",
    ]
    stream = results.get("streaming")
    if stream:
        lines += [
            "",
            f"Streaming ({stream['max_tokens']} tokens, upstream pausing "
            f"{stream['token_latency_ms']:g} ms between tokens, medians of "
            f"{stream['requests']} sequential requests):",
            "",
            "| path | first chunk | whole answer |",
            "|---|--:|--:|",
        ]
        for row in stream["rows"]:
            lines.append(
                f"| {row['label']} | {_ms(row['first_chunk_ms'])} | {_ms(row['total_ms'])} |"
            )
    nproc = results["machine"]["nproc"]
    caveat = "" if nproc == 2 else f"; this machine has {nproc}"
    lines += [
        "",
        f"Targets of issue 2 (stated for a 2-core machine{caveat}; one worker process), "
        "Nexus on the OpenAI route:",
    ]
    for text, met in verdicts(s, r):
        verdict = "not measured" if met is None else ("**met**" if met else "**not met**")
        lines.append(f"- {text}: {verdict}")
    lines += ["", how_measured(results)]
    load = results["machine"]["load_before"]
    if load > BUSY_LOAD:
        lines += [
            "",
            f"**The machine was busy when this ran (load average {load:g} before the "
            "benchmark started): other work competed for the cores, so latency and throughput "
            "figures understate every path. Re-run `make bench` on an idle machine.**",
        ]
    return "\n".join(lines)


def how_measured(results: dict[str, Any]) -> str:
    m, p = results["machine"], results["params"]
    versions = ", ".join(f"{k} {v}" for k, v in results["versions"].items())
    return (
        f"Measured {results['date']} on {m['nproc']} CPUs ({m['cpu_model']}) by "
        f"`bench/run.py` (`make bench`): {p['wrk']}, {p['threads']} thread, 1 and 32 connections, "
        f"{p['duration_s']:g} s per cell after a {p['warmup_s']:g} s warm-up, medians of "
        f"{p['rounds']} rounds; client, servers, upstream (`nexus.local.cpu_llm`) and Redis "
        f"on 127.0.0.1, one worker process each; {versions}; 1-minute load average "
        f"{m['load_before']:g} before, {m['load_after']:g} after (with the benchmark's own). "
        "Added latency is against the upstream called directly on the same route; CPU per "
        "request is the measured server's own processes (user + system) during the "
        "32-connection cell, so for a proxy it excludes the upstream and Redis."
    )


def write_readme(readme: Path, section: str, *, start: str = START, end: str = END) -> None:
    """Replace what lies between the ``start`` and ``end`` marker lines with ``section``."""
    text = readme.read_text()
    at, until = text.find(start), text.find(end)
    if at < 0 or until < at:
        raise SystemExit(f"{readme} has no {start} … {end} section to replace")
    readme.write_text(text[: at + len(start)] + "\n" + section + "\n" + text[until:])
