"""Turn the measured cells into medians, ratios, target verdicts and the README's Markdown.

Every figure printed comes from the run's raw results; nothing here is typed by hand
except the targets, which are issue 11's and named as such.
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
    nexus, nexus_v1, kserve, nexus_fast = (
        s.get(k) for k in ("nexus-openai", "nexus-v1", "kserve-v1", "nexus-fast")
    )
    out: dict[str, float | None] = {
        "nexus_v1_rps_over_kserve": ratio(_get(nexus_v1, "rps"), _get(kserve, "rps")),
        "kserve_added_p50_over_nexus_v1": ratio(
            _get(kserve, "added_p50_ms"), _get(nexus_v1, "added_p50_ms")
        ),
    }
    for peer in ("litellm", "portkey"):
        other = s.get(f"{peer}-openai")
        out[f"nexus_rps_over_{peer}"] = ratio(_get(nexus, "rps"), _get(other, "rps"))
        out[f"{peer}_added_p50_over_nexus"] = ratio(
            _get(other, "added_p50_ms"), _get(nexus, "added_p50_ms")
        )
        out[f"{peer}_cpu_over_nexus"] = ratio(
            _get(other, "cpu_us_per_request"), _get(nexus, "cpu_us_per_request")
        )
    for floor in ("floor-aiohttp-redis", "floor-lean-redis"):
        out[f"nexus_rps_over_{floor}"] = ratio(_get(nexus_fast, "rps"), _get(s.get(floor), "rps"))
        out[f"nexus_cpu_over_{floor}"] = ratio(
            _get(nexus_fast, "cpu_us_per_request"), _get(s.get(floor), "cpu_us_per_request")
        )
    return out


def _get(summary: Summary | None, attr: str) -> float | None:
    return None if summary is None else getattr(summary, attr)


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
         f"({_ms(hop.added_p50_ms)} against {_ms(floor.added_p50_ms)} = {fmt_ratio(p50)})",
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


def verdicts(s: dict[str, Summary], stream: list[dict[str, Any]]) -> list[Verdict]:
    """Issue 11's targets for the transformer's full governed path."""
    found: list[Verdict] = []
    if "nexus-fast" in s and "floor-lean-redis" in s:
        found += floor_verdicts(
            s["nexus-fast"],
            s["floor-lean-redis"],
            name="the transformer",
            floor_name="lean Redis floor",
            rps_share=TARGET_TRANSFORMER_RPS_SHARE,
        )
    found.append(ttfb_verdict("the transformer", stream, "Nexus transformer", "direct upstream"))
    return found


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} ms"


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} µs"


def fmt_ratio(value: float | None) -> str:
    # Shares near 1 need two places: 0.58 against a 0.6 target must not print as 0.6.
    return "n/a" if value is None else f"{value:.2f}×"  # noqa: RUF001


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
        f"Ratios: Nexus ÷ LiteLLM throughput {_times(r['nexus_rps_over_litellm'])}, ÷ Portkey "
        f"{_times(r['nexus_rps_over_portkey'])}; added p50 LiteLLM ÷ Nexus "
        f"{_times(r['litellm_added_p50_over_nexus'])}, Portkey ÷ Nexus "
        f"{_times(r['portkey_added_p50_over_nexus'])}; CPU per request LiteLLM ÷ Nexus "
        f"{_times(r['litellm_cpu_over_nexus'])}, Portkey ÷ Nexus "
        f"{_times(r['portkey_cpu_over_nexus'])}; Nexus ÷ `kserve.Model` throughput on the v1 "
        f"route {_times(r['nexus_v1_rps_over_kserve'])}. On the canned upstream, the "
        "transformer's throughput ÷ the aiohttp Redis floor's "
        f"{fmt_ratio(r['nexus_rps_over_floor-aiohttp-redis'])}, ÷ the lean Redis floor's "
        f"{fmt_ratio(r['nexus_rps_over_floor-lean-redis'])}; its CPU per request ÷ theirs "
        f"{fmt_ratio(r['nexus_cpu_over_floor-aiohttp-redis'])} and "
        f"{fmt_ratio(r['nexus_cpu_over_floor-lean-redis'])}.",
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
        lines += [f"\n{row['label']} could not stream: `{row['error']}`"
                  for row in stream["rows"] if row.get("error")]  # fmt: skip
    lines += ["", "Targets of issue 11 (against the lean floor measured in the same run):"]
    lines += verdict_lines(verdicts(s, stream["rows"] if stream else []))
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
        f"{p['rounds']} rounds; client, servers, upstream (`tests/support/cpu_llm.py`) and Redis "
        f"on 127.0.0.1, one worker process each; {versions}; 1-minute load average "
        f"{m['load_before']:g} before, {m['load_after']:g} after (with the benchmark's own). "
        "Added latency is against the upstream called directly on the same route; CPU per "
        "request is the measured server's own processes (user + system, from "
        "`/proc/<pid>/stat` before and after) during the 32-connection cell, so for a proxy "
        "it excludes the upstream and Redis. The canned upstream (`bench/fast_upstream.py`) "
        "answers a fixed completion so that what stands in front of it saturates first; the "
        "floors (`bench/passthrough.py`) are uvicorn + httptools + uvloop pass-throughs in "
        "front of it whose upstream hop is an aiohttp session or lean raw keep-alive "
        "connections parsed by httptools, each also with one EVALSHA per request (redis-py, "
        "or `nexus.limits.resp` over one pipelined connection read by hiredis)."
    )


def write_readme(readme: Path, section: str, *, start: str = START, end: str = END) -> None:
    """Replace what lies between the ``start`` and ``end`` marker lines with ``section``."""
    text = readme.read_text()
    at, until = text.find(start), text.find(end)
    if at < 0 or until < at:
        raise SystemExit(f"{readme} has no {start} … {end} section to replace")
    readme.write_text(text[: at + len(start)] + "\n" + section + "\n" + text[until:])
