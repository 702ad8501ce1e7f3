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
  the champion's by more than ``quality.max_check_drop``;
- optionally (tag ``quality.judge``), a judge model's pairwise preferences between the two
  greedy answers (``nexus.release.judge``): blocked when the champion's are preferred with a
  one-sided sign test's p-value below ``quality.judge_alpha`` over at least
  ``quality.judge_min_examples`` decisive comparisons; with fewer, the judge does not block
  and the verdict says so.
The thresholds are tags of the registered model (``nexus.registry.conventions``). Without
a champion (a first release) nothing is compared and the gate passes, saying so. A
candidate that cannot answer the requests is blocked; a champion or a judge that cannot is
an error (``ReleaseError``): the gate cannot judge, the release fails rather than blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from nexus.errors import ConfigError, RegistryError, ReleaseError
from nexus.manifests.model import ISVC_NAME
from nexus.registry import conventions as c
from nexus.release.evaluation import Endpoint, EvaluationSet, Score, score_all
from nexus.release.judge import Judgement, compare

EXIT_BLOCKED: Final = 4
OUTCOME_BLOCKED: Final = "blocked"
TABLE_FILE: Final = "quality_gate.json"
GATE_KEY: Final = "gate"  # the verdict's key in a stage's analysis
SHOWN_CHARS: Final = 60  # characters of prompts and answers in the report's table
JUDGE_SCHEMES: Final = ("http://", "https://")


@dataclass(frozen=True, slots=True)
class GateThresholds:
    max_logprob_drop: float = 0.5
    max_check_drop: float = 0.0
    min_examples: int = 1
    judge: str = ""  # quality.judge: an OpenAI base URL or an InferenceService name
    judge_min_examples: int = 10
    judge_alpha: float = 0.05

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> GateThresholds:
        """The registered model's ``quality.*`` tags; a malformed one is a ``ConfigError``."""
        found: dict[str, Any] = {}
        for key, name, kind in (
            (c.QUALITY_MAX_LOGPROB_DROP, "max_logprob_drop", float),
            (c.QUALITY_MAX_CHECK_DROP, "max_check_drop", float),
            (c.QUALITY_MIN_EXAMPLES, "min_examples", int),
            (c.QUALITY_JUDGE_MIN_EXAMPLES, "judge_min_examples", int),
            (c.QUALITY_JUDGE_ALPHA, "judge_alpha", float),
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
        thresholds = cls(**found, judge=_judge_tag(tags.get(c.QUALITY_JUDGE) or ""))
        if not 0 < thresholds.judge_alpha < 1:
            raw = tags[c.QUALITY_JUDGE_ALPHA]
            raise ConfigError(f"tag {c.QUALITY_JUDGE_ALPHA}={raw!r} must be within (0, 1)")
        return thresholds


def _judge_tag(judge: str) -> str:
    """A URL is called without credentials (an in-cluster server, or one needing none): one
    with a user or password in it is refused, so no key is kept in a tag or echoed."""
    url = judge.startswith(JUDGE_SCHEMES)
    if url and "@" in urlsplit(judge).netloc:
        raise ConfigError(f"tag {c.QUALITY_JUDGE} must not carry credentials in its URL")
    if (url and not judge.rstrip("/").endswith("/v1")) or (
        judge and not url and not ISVC_NAME.fullmatch(judge)
    ):
        raise ConfigError(
            f"tag {c.QUALITY_JUDGE}={judge!r} must be an http(s):// OpenAI base URL ending "
            f"in /v1 or the name of an InferenceService"
        )
    return judge


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
    if "judge_p_value" in m:
        found.append(f"judge {m['judge_wins']:.0f} won, {m['judge_losses']:.0f} lost, "
                     f"{m['judge_ties']:.0f} tied (p = {m['judge_p_value']:.2g})")  # fmt: skip
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
    judge: Endpoint | None = None,
) -> GateVerdict:
    """Score both endpoints on every example and decide; see the module docstring. ``judge``
    is asked only when there is a champion."""
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
    notes: list[str] = []
    if judge is not None:
        try:
            judgement = compare(judge, evaluation, mine, theirs)
        except ReleaseError as exc:
            raise ReleaseError(f"the judge ({c.QUALITY_JUDGE}) could not be asked: {exc}") from exc
        _judged(judgement, thresholds, metrics, rows, reasons, notes)
    return GateVerdict(not reasons, (*reasons, *notes), metrics, rows)


def _judged(
    judgement: Judgement,
    thresholds: GateThresholds,
    metrics: dict[str, float],
    rows: Sequence[dict[str, Any]],
    reasons: list[str],
    notes: list[str],
) -> None:
    """The judge's metrics, column and decision: a blocking reason, or a note when too few."""
    for row, preference in zip(rows, judgement.preferences, strict=True):
        row["judge"] = preference
    p_value = judgement.p_value
    metrics.update(judge_wins=judgement.wins, judge_losses=judgement.losses,
                   judge_ties=judgement.ties, judge_unparseable=judgement.unparseable,
                   judge_p_value=p_value)  # fmt: skip
    n = judgement.wins + judgement.losses
    if n < thresholds.judge_min_examples:
        notes.append(
            f"judge: {n} decisive comparisons, fewer than "
            f"{c.QUALITY_JUDGE_MIN_EXAMPLES}={thresholds.judge_min_examples}: not judged"
        )
    elif p_value < thresholds.judge_alpha:
        reasons.append(
            f"judge: the champion's answers were preferred in {judgement.losses} of {n} "
            f"decisive comparisons (p = {p_value:.2g} < {thresholds.judge_alpha}, "
            f"{c.QUALITY_JUDGE_ALPHA})"
        )


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
