"""What a call used, read from the predictor's answer: the one place usage is parsed.

A whole answer carries ``usage`` in its JSON body; a stream carries it in its last
``data:`` event when ``include_usage`` was asked for (``openai.upstream_body`` asks for it
on every stream). ``StreamUsage`` is the relay's chunk filter: it forwards complete
events only, records the usage chunk and drops it when the transformer, not the client,
asked for it. ``Governor.settle`` charges what this module found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

EVENT_END = b"\n\n"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt: int
    completion: int
    total: int

    @classmethod
    def of(cls, usage: dict[str, Any]) -> Usage:
        prompt = _int(usage.get("prompt_tokens"))
        completion = _int(usage.get("completion_tokens"))
        return cls(prompt, completion, _int(usage.get("total_tokens")) or prompt + completion)


def body_usage(data: bytes) -> Usage | None:
    """The ``usage`` of a whole JSON answer, when it has one."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    usage = body.get("usage") if isinstance(body, dict) else None
    return Usage.of(usage) if isinstance(usage, dict) else None


def _event_usage(event: bytes) -> Usage | None:
    """The ``usage`` object of one ``data:`` event, when it has a non-null one."""
    if not event.startswith(b"data:"):
        return None
    try:
        data = orjson.loads(event[5:])
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return Usage.of(usage) if isinstance(usage, dict) else None


class StreamUsage:
    """Chunk filter for ``edge.sse.relay``: complete events only, usage read on the way.

    A chunk may end mid-event; the tail waits for the next chunk. ``events`` counts the
    ``data:`` events relayed (``[DONE]`` excluded): vLLM sends one generated token per
    event, so that is what the client got when no usage chunk arrives.
    """

    __slots__ = ("_keep_usage_chunk", "_pending", "events", "usage")

    def __init__(self, *, keep_usage_chunk: bool) -> None:
        self._keep_usage_chunk = keep_usage_chunk
        self._pending = b""
        self.events = 0
        self.usage: Usage | None = None

    def __call__(self, chunk: bytes) -> bytes:
        pending = self._pending + chunk if self._pending else chunk
        cut = pending.rfind(EVENT_END)
        if cut < 0:
            self._pending = pending
            return b""
        complete, self._pending = pending[: cut + 2], pending[cut + 2 :]
        self.events += complete.count(b"data:") - complete.count(b"data: [DONE]")
        if b'"usage"' not in complete:
            return complete
        kept: list[bytes] = []
        for event in complete.split(EVENT_END):
            if not event:
                continue
            usage = _event_usage(event)
            if usage is not None:
                self.usage = usage
                if not self._keep_usage_chunk and b'"choices":[]' in event.replace(b" ", b""):
                    continue
            kept.append(event + EVENT_END)
        return b"".join(kept)

    def rest(self) -> bytes:
        return self._pending

    def charged(self, *, prompt_estimate: int, sent: bool) -> Usage | None:
        """The usage to settle: the predictor's, or what was streamed when it never came.

        A client that hangs up (or a stream that breaks) before the usage chunk has still
        received ``events`` tokens and made the predictor read its prompt; refunding the
        reservation to zero let a key stream without limit (issue 12, item 3). ``None``
        when nothing was sent (the reservation is refunded).
        """
        if self.usage is not None or not sent:
            return self.usage
        return Usage(prompt_estimate, self.events, prompt_estimate + self.events)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
