"""OpenAI request bodies: validation, token estimates and the rewrite sent upstream.

Validation is deliberately shallow: it checks what the transformer itself relies on (model,
messages/prompt/input, stream, max_tokens) and leaves sampling parameters to the
predictor, whose 4xx answers pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from nexus.errors import InvalidRequest

Kind = Literal["chat", "completions", "embeddings"]
CHARS_PER_TOKEN = 4
# Request fields the predictor renders into the prompt besides the messages: tool and
# function schemas (vLLM's chat templates put them in the system turn) and the
# structured-output schema. They are counted at their JSON length (issue 12, item 6).
PROMPT_FIELDS = ("tools", "functions", "tool_choice", "response_format")
# A non-text content part (image, audio, file) costs at least this many tokens: LLaVA-1.5
# turns one image into 24 x 24 = 576 tokens (336-pixel input, 14-pixel CLIP patches).
MEDIA_PART_TOKENS = 576


@dataclass(slots=True)
class OpenAIRequest:
    kind: Kind
    model: str
    body: dict[str, Any]
    stream: bool
    client_wants_usage: bool
    token_estimate: int
    prompt_estimate: int


def parse(kind: Kind, raw: bytes, *, default_max_tokens: int) -> OpenAIRequest:
    """Parse and validate a request body, raising ``InvalidRequest`` with the bad ``param``."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    if kind == "chat":
        prompt_chars = _chat_chars(body.get("messages"))
        prompt_chars += sum(_json_chars(body.get(name)) for name in PROMPT_FIELDS)
    elif kind == "completions":
        prompt_chars = _prompt_chars(body.get("prompt"))
    else:
        prompt_chars = _input_chars(body.get("input"))
        stream = False
    max_tokens = 0
    if kind != "embeddings":
        max_tokens = default_max_tokens
        for name in ("max_tokens", "max_completion_tokens"):
            value = body.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"'{name}' must be a positive integer", param=name)
            max_tokens = value
    return OpenAIRequest(
        kind=kind,
        model=model,
        body=body,
        stream=stream,
        client_wants_usage=bool(options and options.get("include_usage")),
        token_estimate=prompt_chars // CHARS_PER_TOKEN + 1 + max_tokens,
        prompt_estimate=prompt_chars // CHARS_PER_TOKEN + 1,
    )


def upstream_body(request: OpenAIRequest, raw: bytes, *, served_name: str) -> bytes:
    """The body sent to the predictor: served model name, and usage asked for when streaming.

    Streams always ask for usage so token budgets can be settled with the real count; a
    usage chunk the client did not ask for is dropped on the way back.
    """
    body = request.body
    changed = False
    if request.model != served_name:
        body["model"] = served_name
        changed = True
    if request.stream and not request.client_wants_usage:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        changed = True
    return orjson.dumps(body) if changed else raw


def _chat_chars(messages: object) -> int:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    total = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"'messages[{i}]' must be an object with a string 'role'", param=f"messages[{i}]"
            )
        content = message.get("content")
        total += _json_chars(message.get("tool_calls")) + _json_chars(message.get("name"))
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(_part_chars(part) for part in content)
        elif content is not None:
            raise InvalidRequest(
                f"'messages[{i}].content' must be a string or an array of parts",
                param=f"messages[{i}].content",
            )
    return total


def _part_chars(part: object) -> int:
    """A content part: its text, or for media its JSON length with a floor of one image."""
    if isinstance(part, dict) and part.get("type", "text") == "text":
        text = part.get("text", "")
        return len(text) if isinstance(text, str) else _json_chars(text)
    return max(_json_chars(part), MEDIA_PART_TOKENS * CHARS_PER_TOKEN)


def _json_chars(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    try:
        return len(orjson.dumps(value))
    except TypeError:  # pragma: no cover - parsed JSON always serialises back
        return 0


def _prompt_chars(prompt: object) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return sum(len(p) for p in prompt)
        if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
            return len(prompt) * CHARS_PER_TOKEN
        if all(isinstance(p, list) for p in prompt):
            return sum(len(p) for p in prompt) * CHARS_PER_TOKEN
    raise InvalidRequest(
        "'prompt' must be a string, an array of strings or an array of token ids", param="prompt"
    )


def _input_chars(value: object) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list) and value:
        return sum(len(v) if isinstance(v, str | list) else 1 for v in value)
    raise InvalidRequest("'input' must be a string or a non-empty array", param="input")
