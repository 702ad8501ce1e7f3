"""The quality gate at 0 %: the dark candidate against the champion, on the evaluation set.

A release commits the candidate with ``canaryTrafficPercent: 0`` and tag routing on
(``nexus.release.tag_routing``), waits until the candidate revision is ready, then calls
``judge_candidate`` with the two predictors' endpoints (the candidate at the ``latest`` tag,
the champion at ``prev``). A failed verdict means the candidate never gets traffic: the
release ends with exit status 4 and outcome ``blocked`` and reverts the revision.

The verdict compares, over the same examples:
- the mean per-token log-probability of the reference completions (all reference tokens
  pooled): blocked when the candidate's is lower than the champion's by more than
  ``quality.max_logprob_drop`` nats per token;
- the share of checks the greedy answers pass: blocked when the candidate's is lower than
  the champion's by more than ``quality.max_check_drop``.
Both thresholds are tags of the registered model (``nexus.registry.conventions``). Without
a champion (a first release) nothing is compared and the gate passes, saying so. A
candidate that cannot answer the requests is blocked; a champion that cannot is an error
(``ReleaseError``): the gate cannot judge, the release fails rather than blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from nexus.errors import ConfigError, RegistryError, ReleaseError
from nexus.registry import conventions as c
from nexus.release.evaluation import Endpoint, EvaluationSet, Score, score_all

EXIT_BLOCKED: Final = 4
OUTCOME_BLOCKED: Final = "blocked"
TABLE_FILE: Final = "quality_gate.json"
GATE_KEY: Final = "gate"  # the verdict's key in a stage's analysis
SHOWN_CHARS: Final = 60  # characters of prompts and answers in the report's table


@dataclass(frozen=True, slots=True)
class GateThresholds:
    max_logprob_drop: float = 0.5
    max_check_drop: float = 0.0
    min_examples: int = 1

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> GateThresholds:
        """The registered model's ``quality.*`` tags; a malformed one is a ``ConfigError``."""
        found: dict[str, Any] = {}
        for key, name, kind in (
            (c.QUALITY_MAX_LOGPROB_DROP, "max_logprob_drop", float),
            (c.QUALITY_MAX_CHECK_DROP, "max_check_drop", float),
            (c.QUALITY_MIN_EXAMPLES, "min_examples", int),
        ):
            raw = tags.get(key)
            if raw is None or raw == "":
                continue
            try:
                value = kind(raw)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ConfigError(f"tag {key}={raw!r} must be {what}") from None
            if value < 0:
                raise ConfigError(f"tag {key}={raw!r} must not be negative")
            found[name] = value
        return cls(**found)


@dataclass(frozen=True, slots=True)
class GateVerdict:
    passed: bool
    reasons: tuple[str, ...]
    metrics: Mapping[str, float] = field(default_factory=dict)
    rows: tuple[Mapping[str, Any], ...] = ()


def _pooled(scores: Sequence[Score]) -> float:
    tokens = [lp for s in scores for lp in s.token_logprobs]
    return sum(tokens) / len(tokens)


def measured(verdict: GateVerdict) -> str:
    """What the gate measured, candidate against champion, in one line."""
    m = verdict.metrics
    found = []
    if "candidate_logprob" in m and "champion_logprob" in m:
        found.append(f"log-probability {m['candidate_logprob']:.3f} against "
                     f"{m['champion_logprob']:.3f} nats/token")  # fmt: skip
    if "candidate_check_rate" in m and "champion_check_rate" in m:
        found.append(f"checks {100 * m['candidate_check_rate']:.0f} % against "
                     f"{100 * m['champion_check_rate']:.0f} %")  # fmt: skip
    return ", ".join(found) or "nothing measured"


def _check_rate(scores: Sequence[Score]) -> float | None:
    results = [r for s in scores for r in s.checks]
    return sum(results) / len(results) if results else None


def _rows(
    evaluation: EvaluationSet, candidate: Sequence[Score], champion: Sequence[Score] | None
) -> tuple[dict[str, Any], ...]:
    rows = []
    for i, example in enumerate(evaluation.examples):
        mine = candidate[i]
        row: dict[str, Any] = {
            "id": example.id,
            "prompt": example.prompt,
            "reference": example.reference,
            "reference_tokens": len(mine.token_logprobs),
            "candidate_logprob": round(mine.mean_logprob, 4),
            "candidate_answer": mine.answer,
            "candidate_checks": f"{sum(mine.checks)}/{len(mine.checks)}",
        }
        if champion is not None:
            theirs = champion[i]
            row["champion_logprob"] = round(theirs.mean_logprob, 4)
            row["delta"] = round(mine.mean_logprob - theirs.mean_logprob, 4)
            row["champion_answer"] = theirs.answer
            row["champion_checks"] = f"{sum(theirs.checks)}/{len(theirs.checks)}"
        rows.append(row)
    return tuple(rows)


def judge_candidate(
    *,
    candidate: Endpoint,
    champion: Endpoint | None,
    evaluation: EvaluationSet,
    thresholds: GateThresholds,
) -> GateVerdict:
    """Score both endpoints on every example and decide; see the module docstring."""
    n = len(evaluation.examples)
    if n < thresholds.min_examples:
        reason = f"the evaluation set has {n} examples, quality.min_examples is "
        return GateVerdict(False, (reason + str(thresholds.min_examples),))
    try:
        mine = score_all(candidate, evaluation)
    except ReleaseError as exc:
        return GateVerdict(False, (f"the candidate could not be evaluated: {exc}",))
    theirs = score_all(champion, evaluation) if champion is not None else None
    metrics: dict[str, float] = {"examples": float(n), "candidate_logprob": _pooled(mine)}
    mine_checks = _check_rate(mine)
    if mine_checks is not None:
        metrics["candidate_check_rate"] = mine_checks
    rows = _rows(evaluation, mine, theirs)
    if theirs is None:
        return GateVerdict(True, ("no champion to compare with: measured, not compared",),
                           metrics, rows)  # fmt: skip
    reasons = []
    metrics["champion_logprob"] = _pooled(theirs)
    drop = metrics["champion_logprob"] - metrics["candidate_logprob"]
    metrics["logprob_drop"] = drop
    if drop > thresholds.max_logprob_drop:
        reasons.append(
            f"likelihood: the reference completions' mean log-probability per token is "
            f"{metrics['candidate_logprob']:.3f} under the candidate against "
            f"{metrics['champion_logprob']:.3f} under the champion, a drop of {drop:.3f} > "
            f"{thresholds.max_logprob_drop} ({c.QUALITY_MAX_LOGPROB_DROP})"
        )
    their_checks = _check_rate(theirs)
    if mine_checks is not None and their_checks is not None:
        metrics["champion_check_rate"] = their_checks
        if their_checks - mine_checks > thresholds.max_check_drop:
            reasons.append(
                f"checks: the candidate's greedy answers pass {mine_checks:.0%} of the checks, "
                f"the champion's {their_checks:.0%} (allowed drop {thresholds.max_check_drop}, "
                f"{c.QUALITY_MAX_CHECK_DROP})"
            )
    return GateVerdict(not reasons, tuple(reasons), metrics, rows)


def report_section(verdict: GateVerdict) -> str:
    """The gate's Markdown section of the release report: decision, numbers, every example."""
    lines = ["## Quality gate at 0 %", ""]
    lines.append(f"**{'passed' if verdict.passed else 'blocked'}**" + ("" if verdict.passed else
                 f" (exit status {EXIT_BLOCKED}, outcome `{OUTCOME_BLOCKED}`)"))  # fmt: skip
    if verdict.reasons:
        lines += [""] + [f"- {reason}" for reason in verdict.reasons]
    if verdict.metrics:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in verdict.metrics.items()]
    if verdict.rows:
        columns = list(verdict.rows[0])
        lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for row in verdict.rows:
            cells = [_cell(row.get(col, "")) for col in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    text = str(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def log_verdict(tracking_uri: str, run_id: str, verdict: GateVerdict) -> None:
    """The verdict into an MLflow run: ``gate.*`` metrics, tag ``gate.passed``, the table."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        for key, value in verdict.metrics.items():
            client.log_metric(run_id, f"gate.{key}", value)
        client.set_tag(run_id, "gate.passed", str(verdict.passed).lower())
        if verdict.rows:
            columns = list(verdict.rows[0])
            table = {col: [row.get(col) for row in verdict.rows] for col in columns}
            client.log_table(run_id, table, TABLE_FILE)
    except MlflowException as exc:
        raise RegistryError(f"logging the quality gate to run {run_id}: {exc.message}") from exc
