"""The quality gate's pairwise judge: the sign test, the tags, and a real judge on loopback.

One real HTTP server on a free loopback port plays the two predictors (vLLM's
``/v1/completions`` with ``prompt_logprobs``, answering per model) and the judge (an OpenAI
``/v1/chat/completions`` whose deterministic rule prefers the answer with the word "apple",
replies nonsense when an answer says "gibberish", and records every A/B pair it is shown).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from nexus.cli.main import main
from nexus.errors import ConfigError, ReleaseError
from nexus.registry import conventions as c
from nexus.release.evaluation import Endpoint, EvaluationSet
from nexus.release.gate import GateThresholds, GateVerdict, judge_candidate, measured
from nexus.release.gate import report_section as section
from nexus.release.gate_stage import judge_endpoint
from nexus.release.judge import EMPTY, PROMPT, parse_reply, sign_test
from nexus.release.plan import ReleasePlan
from tests.support.http_server import send_json, serving
from tests.support.processes import free_port

JUDGE_MODEL = "judge-model"
SHOWN = re.compile(r"Answer A:\n(?P<a>.*)\n\nAnswer B:\n(?P<b>.*)\n\nWhich", re.DOTALL)


@dataclass
class Loopback:
    """What the server answers (``answers[model][prompt]``) and what the judge was shown."""

    url: str
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    shown: list[tuple[str, str]] = field(default_factory=list)
    judge_status: int = 200
    judge_body: object = None  # answered as it is instead of a verdict, when set
    models: object = None  # answered for /v1/models instead of the judge's, when set
    isvc: dict[str, Any] | None = None


def _handler(state: Loopback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _send(self, status: int, body: object) -> None:
            send_json(self, status, body)

        def do_GET(self) -> None:
            if self.path == "/v1/models":
                listed = {"object": "list", "data": [{"id": JUDGE_MODEL}]}
                self._send(200, listed if state.models is None else state.models)
            elif self.path.endswith("/inferenceservices/judge") and state.isvc is not None:
                self._send(200, state.isvc)
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/v1/chat/completions":
                self._judge(body)
            else:
                self._complete(body)

        def _complete(self, body: dict[str, Any]) -> None:
            words = len(body["prompt"].split())
            if "prompt_logprobs" in body:  # the reference's likelihood: the same for both
                entries = [None] + [{"7": {"logprob": -1.0}}] * (words - 1)
                self._send(200, {"choices": [{"text": "", "prompt_logprobs": entries}]})
                return
            text = state.answers[body["model"]][body["prompt"]]
            self._send(200, {"choices": [{"text": text}], "usage": {"prompt_tokens": words}})

        def _judge(self, body: dict[str, Any]) -> None:
            if state.judge_status != 200:
                self._send(state.judge_status, {"error": {"message": "the judge is down"}})
                return
            if state.judge_body is not None:
                self._send(200, state.judge_body)
                return
            assert body["model"] == JUDGE_MODEL
            assert body["temperature"] == 0
            shown = SHOWN.search(body["messages"][0]["content"])
            assert shown is not None
            a, b = shown["a"], shown["b"]
            state.shown.append((a, b))
            if "gibberish" in a + b:
                reply = "I cannot tell"
            elif ("apple" in a) == ("apple" in b):
                reply = "TIE"
            else:
                reply = " a." if "apple" in a else "B"
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": reply}}]})

    return Handler


@contextlib.contextmanager
def loopback_server() -> Iterator[Loopback]:
    """The predictors' and the judge's server on a free loopback port, for a ``with``."""
    state = Loopback(url="")
    with serving(_handler(state)) as state.url:
        yield state


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    with loopback_server() as state:
        yield state


def _evaluation(n: int) -> EvaluationSet:
    return EvaluationSet.from_json({"examples": [
        {"id": f"q{i}", "prompt": f"question number {i}", "reference": " some reference words"}
        for i in range(n)
    ]})  # fmt: skip


def _gate(
    loopback: Loopback,
    candidate: list[str],
    champion: list[str],
    thresholds: GateThresholds | None = None,
) -> GateVerdict:
    evaluation = _evaluation(len(candidate))
    prompts = [e.prompt for e in evaluation.examples]
    loopback.answers = {"candidate": dict(zip(prompts, candidate, strict=True)),
                        "champion": dict(zip(prompts, champion, strict=True))}  # fmt: skip
    base = f"{loopback.url}/v1"
    return judge_candidate(
        candidate=Endpoint(base, "candidate"),
        champion=Endpoint(base, "champion"),
        evaluation=evaluation,
        thresholds=thresholds or GateThresholds(),
        judge=Endpoint(base, JUDGE_MODEL),
    )


def test_the_sign_test_is_exact() -> None:
    assert sign_test(1, 9) == 11 / 1024
    assert sign_test(0, 10) == 1 / 1024
    assert sign_test(5, 5) == 638 / 1024
    assert sign_test(3, 3) == 42 / 64
    assert sign_test(10, 0) == 1.0
    assert sign_test(0, 0) == 1.0, "no decisive comparison: no evidence"
    assert 0 < sign_test(500, 1500) < 1e-100, "big n neither overflows nor rounds to 0"


def test_judge_tags_are_parsed_and_malformed_ones_refused() -> None:
    default = GateThresholds.from_tags({})
    assert (default.judge, default.judge_min_examples, default.judge_alpha) == ("", 10, 0.05)
    parsed = GateThresholds.from_tags({c.QUALITY_JUDGE: "judge-8b",
                                       c.QUALITY_JUDGE_MIN_EXAMPLES: "20",
                                       c.QUALITY_JUDGE_ALPHA: "0.01"})  # fmt: skip
    assert (parsed.judge, parsed.judge_min_examples, parsed.judge_alpha) == ("judge-8b", 20, 0.01)
    assert GateThresholds.from_tags({c.QUALITY_JUDGE: "https://api.example/v1"}).judge
    refused = {
        c.QUALITY_JUDGE_MIN_EXAMPLES: (
            "ten",
            "quality.judge_min_examples='ten' must be an integer",
        ),
        c.QUALITY_JUDGE_ALPHA: ("1.5", "quality.judge_alpha='1.5' must be within (0, 1)"),
    }
    for tag, (raw, message) in refused.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            GateThresholds.from_tags({tag: raw})
    for raw in ("0", "x"):
        with pytest.raises(ConfigError, match=c.QUALITY_JUDGE_ALPHA):
            GateThresholds.from_tags({c.QUALITY_JUDGE_ALPHA: raw})
    for judge in ("ftp://judge/v1", "http://judge:8000/v2", "Judge_8B", "-judge", "judge\n"):
        with pytest.raises(ConfigError, match=re.escape(f"tag quality.judge={judge!r} must be")):
            GateThresholds.from_tags({c.QUALITY_JUDGE: judge})
    with pytest.raises(ConfigError, match="must not carry credentials") as refused:
        GateThresholds.from_tags({c.QUALITY_JUDGE: "https://user:not-a-real-key@api.example/v1"})
    assert "not-a-real-key" not in str(refused.value)


def test_replies_are_read_strictly() -> None:
    assert [parse_reply(t) for t in ("A", " b.", '"TIE"', "tie\n")] == ["A", "B", "TIE", "TIE"]
    assert [parse_reply(t) for t in ("A or B", "Answer A", "", "neither")] == [None] * 4
    assert "{prompt}" in PROMPT
    assert "exactly one word: A, B, or TIE" in PROMPT


def test_a_candidate_the_judge_prefers_less_is_blocked_and_positions_alternate(
    loopback: Loopback,
) -> None:
    candidate = [f"banana {i}" for i in range(10)]
    champion = [f"apple {i}" for i in range(10)]
    verdict = _gate(loopback, candidate, champion)
    assert not verdict.passed
    assert verdict.reasons == (
        "judge: the champion's answers were preferred in 10 of 10 decisive comparisons "
        "(p = 0.00098 < 0.05, quality.judge_alpha)",
    )
    # The candidate is A on even indexes, B on odd ones.
    assert loopback.shown == [
        (candidate[i], champion[i]) if i % 2 == 0 else (champion[i], candidate[i])
        for i in range(10)
    ]
    assert [row["judge"] for row in verdict.rows] == ["champion"] * 10
    m = verdict.metrics
    assert (m["judge_wins"], m["judge_losses"], m["judge_ties"], m["judge_unparseable"]) == (
        0, 10, 0, 0)  # fmt: skip
    assert m["judge_p_value"] == 1 / 1024
    assert "judge 0 won, 10 lost, 0 tied (p = 0.00098)" in measured(verdict)
    report = section(verdict)
    assert "**blocked** (exit status 4, outcome `blocked`)" in report
    assert "| judge_p_value | 0.0009766 |" in report
    assert report.splitlines()[-1].endswith("| champion |")

    # 9 of 10 for the candidate: it passes, and the verdict says how the judge saw it.
    loopback.shown.clear()
    better = _gate(loopback, [f"{'banana' if i == 4 else 'apple'} {i}" for i in range(10)],
                   [f"{'apple' if i == 4 else 'banana'} {i}" for i in range(10)])  # fmt: skip
    assert better.passed, better.reasons
    assert better.reasons == ()
    assert better.metrics["judge_wins"] == 9
    assert better.metrics["judge_losses"] == 1
    assert "judge 9 won, 1 lost, 0 tied (p = 1)" in measured(better)


def test_too_few_decisive_comparisons_do_not_block(loopback: Loopback) -> None:
    """Identical answers are ties the judge is never asked about; 3 losses of 3 are not
    enough evidence under quality.judge_min_examples=10."""
    champion = [f"apple {i}" for i in range(10)]
    candidate = [*champion[:7], "banana 7", "banana 8", "banana 9"]
    verdict = _gate(loopback, candidate, champion)
    assert verdict.passed
    assert verdict.reasons == (
        "judge: 3 decisive comparisons, fewer than quality.judge_min_examples=10: not judged",
    )
    assert len(loopback.shown) == 3, "identical answers are not shown to the judge"
    assert [row["judge"] for row in verdict.rows] == ["tie"] * 7 + ["champion"] * 3
    assert verdict.metrics["judge_ties"] == 7

    lenient = GateThresholds(judge_min_examples=3, judge_alpha=0.2)
    blocked = _gate(loopback, candidate, champion, lenient)
    assert blocked.reasons == (
        "judge: the champion's answers were preferred in 3 of 3 decisive comparisons "
        "(p = 0.12 < 0.2, quality.judge_alpha)",
    )


def test_a_candidate_that_answers_nothing_is_shown_so_and_loses(loopback: Loopback) -> None:
    champion = [f"apple {i}" for i in range(10)]
    verdict = _gate(loopback, ["", "  "] * 5, champion)
    assert not verdict.passed
    assert verdict.metrics["judge_losses"] == 10
    assert {EMPTY} == {pair[i % 2] for i, pair in enumerate(loopback.shown)}


def test_unparseable_replies_are_ties_and_counted(loopback: Loopback) -> None:
    champion = [f"apple {i}" for i in range(10)]
    candidate = [f"gibberish {i}" if i < 4 else f"banana {i}" for i in range(10)]
    verdict = _gate(loopback, candidate, champion)
    assert verdict.metrics["judge_unparseable"] == 4
    assert verdict.metrics["judge_ties"] == 4
    assert verdict.metrics["judge_losses"] == 6
    assert verdict.passed, "6 decisive comparisons are fewer than 10"
    assert "judge: 6 decisive comparisons" in verdict.reasons[0]


def test_a_judge_that_cannot_answer_fails_the_release(loopback: Loopback) -> None:
    loopback.judge_status = 500
    with pytest.raises(ReleaseError, match=r"the judge \(quality.judge\) could not be asked: "
                                           r".* answered 500: .*the judge is down"):  # fmt: skip
        _gate(loopback, ["banana"], ["apple"])
    port = free_port()
    with pytest.raises(ReleaseError, match=r"could not be asked: .* did not answer"):
        judge_candidate(
            candidate=Endpoint(f"{loopback.url}/v1", "candidate"),
            champion=Endpoint(f"{loopback.url}/v1", "champion"),
            evaluation=_evaluation(1),
            thresholds=GateThresholds(),
            judge=Endpoint(f"http://127.0.0.1:{port}/v1", JUDGE_MODEL),
        )


@pytest.mark.parametrize(
    "body", [{"choices": [None]}, {"choices": ["A"]}, {"choices": {"0": 1}}, {"choices": 5}, []]
)
def test_a_judge_answering_odd_json_fails_the_release_with_a_message(
    loopback: Loopback, body: object
) -> None:
    loopback.judge_body = body
    with pytest.raises(ReleaseError, match=r"could not be asked: .* answered without choices"):
        _gate(loopback, ["banana"], ["apple"])


def test_the_judge_tag_resolves_to_an_endpoint(loopback: Loopback) -> None:
    plan = ReleasePlan(model="m", version="2", environment="local", storage_uri="file:///m",
                       runtime="vllm", pool="cpu", champion="1")  # fmt: skip
    assert judge_endpoint(loopback.url, plan, "") is None
    by_url = judge_endpoint(loopback.url, plan, f"{loopback.url}/v1")
    assert by_url == Endpoint(f"{loopback.url}/v1", JUDGE_MODEL), "the model from /models"

    for listed in ({"data": [{"object": "model"}]}, {"data": []}, ["judge"]):
        loopback.models = listed
        with pytest.raises(ReleaseError, match=r"the judge .* lists no model"):
            judge_endpoint(loopback.url, plan, f"{loopback.url}/v1")
    loopback.models = None
    gone = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ReleaseError, match=r"the judge's models could not be listed: .* did not"):
        judge_endpoint(loopback.url, plan, gone)
    with pytest.raises(ReleaseError, match=r"the judge judge .* is no InferenceService of nexus"):
        judge_endpoint(loopback.url, plan, "judge")
    loopback.isvc = {"metadata": {"labels": {"nexus.dev/runtime": "huggingface"}},
                     "status": {"url": "http://127.0.0.1:9"}}  # fmt: skip
    assert judge_endpoint(loopback.url, plan, "judge") == Endpoint(
        "http://127.0.0.1:9/openai/v1", "judge", host="judge-predictor.nexus.svc.cluster.local"
    )


def test_the_cli_refuses_a_bad_judge_tag_before_any_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps(_evaluation(1).to_json()))
    unreachable = f"http://127.0.0.1:{free_port()}"  # never asked: refused before MLflow
    args = ["registry", "evaluation-set", "m", str(path), "--tracking-uri", unreachable]
    assert main([*args, "--judge", "http://judge/v2"]) == 2
    assert "tag quality.judge='http://judge/v2' must be an http(s)://" in capsys.readouterr().err
    assert main([*args, "--judge", "judge", "--judge-alpha", "1"]) == 2
    assert "tag quality.judge_alpha='1.0' must be within (0, 1)" in capsys.readouterr().err
