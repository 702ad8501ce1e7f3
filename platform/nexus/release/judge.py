"""The quality gate's optional judge: which greedy answer a judge model prefers, and a sign test.

With the tag ``quality.judge`` the gate shows a judge model, for every example, the prompt
and the candidate's and the champion's greedy answers labelled A and B (an empty answer shown
as ``(no answer)``: a model that stopped answering should lose there), and asks which is
better (``POST <judge>/chat/completions``, ``temperature: 0``). The candidate is A on even
example indexes and B on odd ones, so a judge that favours a position favours both alike.
Identical answers are a tie without asking; a reply other than
``A``, ``B`` or ``TIE`` counts as a tie and is counted (``unparseable``).

The decision is a one-sided sign test over the decisive comparisons (ties left out): with
``wins`` comparisons won by the candidate out of ``n``, the p-value is P(X <= wins) for X ~
Binomial(n, 1/2), computed exactly. ``gate.judge_candidate`` blocks when ``n`` reaches
``quality.judge_min_examples`` and the p-value is below ``quality.judge_alpha``.

A judge that does not answer, or answers an HTTP error, is a ``ReleaseError``: the gate
cannot judge, the release fails rather than blocks (as for an unreachable champion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from nexus.edge.wire import CHAT_COMPLETIONS, MODELS
from nexus.errors import ReleaseError
from nexus.release.evaluation import ERROR_TAIL, Endpoint, EvaluationSet, Score, post, request

Preference = Literal["candidate", "champion", "tie"]
Reply = Literal["A", "B", "TIE"]
REPLIES: Final[tuple[Reply, ...]] = ("A", "B", "TIE")
EMPTY: Final = "(no answer)"
REPLY_MAX_TOKENS: Final = 4
PROMPT: Final = (
    "You compare two answers to the same prompt.\n\n"
    "Prompt:\n{prompt}\n\n"
    "Answer A:\n{a}\n\n"
    "Answer B:\n{b}\n\n"
    "Which answer is better? Reply with exactly one word: A, B, or TIE."
)


@dataclass(frozen=True, slots=True)
class Judgement:
    """The judge's preference per example."""

    preferences: tuple[Preference, ...]
    unparseable: int = 0

    @property
    def wins(self) -> int:
        return self.preferences.count("candidate")

    @property
    def losses(self) -> int:
        return self.preferences.count("champion")

    @property
    def ties(self) -> int:
        return self.preferences.count("tie")

    @property
    def p_value(self) -> float:
        return sign_test(self.wins, self.losses)


def sign_test(wins: int, losses: int) -> float:
    """One-sided P(X <= wins), X ~ Binomial(wins + losses, 1/2); 1 without any comparison."""
    n = wins + losses
    tail: int = sum(math.comb(n, k) for k in range(wins + 1))
    return tail / (1 << n)  # exact integers: true division of big ones does not overflow


def served_model(url: str) -> str:
    """The first model an OpenAI server at ``url`` (``.../v1``) lists under ``/models``."""
    try:
        listed = request(Endpoint(url, ""), MODELS)
    except ReleaseError as exc:
        raise ReleaseError(f"the judge's models could not be listed: {exc}") from exc
    data = listed.get("data") if isinstance(listed, dict) else None
    first = data[0] if isinstance(data, list) and data else None
    model = first.get("id") if isinstance(first, dict) else None
    if not isinstance(model, str) or not model:
        raise ReleaseError(f"the judge {url} lists no model: {str(listed)[:ERROR_TAIL]}")
    return model


def parse_reply(text: str) -> Reply | None:
    """``A``, ``B`` or ``TIE`` (case, blanks, quotes and a final period aside), else ``None``."""
    word = text.strip().strip("\"'*`.").strip().upper()
    return next((reply for reply in REPLIES if reply == word), None)


def ask(judge: Endpoint, prompt: str, a: str, b: str) -> Reply | None:
    """The judge's reply to one comparison; ``None`` when it is none of the three words."""
    answer = post(judge, CHAT_COMPLETIONS, {
        "messages": [{"role": "user", "content": PROMPT.format(prompt=prompt, a=a, b=b)}],
        "temperature": 0,
        "max_tokens": REPLY_MAX_TOKENS,
    })  # fmt: skip
    message = answer["choices"][0].get("message") or {}
    content = message.get("content") if isinstance(message, dict) else None
    return parse_reply(content) if isinstance(content, str) else None


def compare(
    judge: Endpoint,
    evaluation: EvaluationSet,
    candidate: Sequence[Score],
    champion: Sequence[Score],
) -> Judgement:
    """Every example's preference; the candidate is A on even indexes, B on odd ones."""
    preferences: list[Preference] = []
    unparseable = 0
    for i, example in enumerate(evaluation.examples):
        mine, theirs = (candidate[i].answer.strip() or EMPTY, champion[i].answer.strip() or EMPTY)
        if mine == theirs:
            preferences.append("tie")
            continue
        first = i % 2 == 0
        reply = ask(judge, example.prompt, *((mine, theirs) if first else (theirs, mine)))
        if reply is None:
            unparseable += 1
            preferences.append("tie")
        elif reply == "TIE":
            preferences.append("tie")
        else:
            preferences.append("candidate" if (reply == "A") == first else "champion")
    return Judgement(tuple(preferences), unparseable)
