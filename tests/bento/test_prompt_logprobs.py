"""The CPU worker's ``prompt_logprobs``: vLLM's shape, its refusals, and the ``garble`` fault."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.bento.conftest import Worker, cpu_worker


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with cpu_worker(tmp_path_factory.mktemp("logprobs")) as found:
        yield found


def complete(worker: Worker, **body: object) -> httpx.Response:
    return httpx.post(f"{worker.url}/v1/completions", json={"model": "chat", **body}, timeout=10)


def test_prompt_logprobs_have_vllms_shape_and_are_deterministic(worker: Worker) -> None:
    answer = complete(worker, prompt="the model answers", max_tokens=1, prompt_logprobs=0).json()
    entries = answer["choices"][0]["prompt_logprobs"]
    assert entries[0] is None, "vLLM has no log-probability for the first prompt token"
    assert len(entries) == 3 == answer["usage"]["prompt_tokens"]
    for entry, word in zip(entries[1:], ["model", "answers"], strict=True):
        ((token_id, value),) = entry.items()
        assert token_id.isdigit()
        assert value["decoded_token"] == word
        assert -2.0 <= value["logprob"] <= -1.0
    again = complete(worker, prompt="the model answers", max_tokens=1, prompt_logprobs=0).json()
    assert again["choices"][0]["prompt_logprobs"] == entries
    plain = complete(worker, prompt="the model answers", max_tokens=1).json()
    assert "prompt_logprobs" not in plain["choices"][0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt_logprobs": -2}, "`prompt_logprobs` must be a positive value or -1."),
        ({"prompt_logprobs": "1"}, "prompt_logprobs must be an integer"),
        ({"prompt_logprobs": 1, "stream": True}, "not available when `stream=True`"),
    ],
)
def test_bad_prompt_logprobs_are_a_400_naming_the_field(
    worker: Worker, body: dict[str, object], message: str
) -> None:
    response = complete(worker, prompt="x y", **body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert response.json()["error"]["param"] == "prompt_logprobs"


def test_garble_makes_answers_garbage_and_prompts_unlikely(tmp_path: Path) -> None:
    with cpu_worker(tmp_path, "--garble") as garbled:
        answer = complete(garbled, prompt="the model answers", max_tokens=4, prompt_logprobs=0)
    body = answer.json()
    assert not any(c.isalpha() and c.islower() and c in "aeiou" for c in body["choices"][0]["text"])
    ((_, value),) = body["choices"][0]["prompt_logprobs"][1].items()
    assert value["logprob"] < -9.0
