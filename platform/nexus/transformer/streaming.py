"""Server-sent events from the predictor to the client, chunk by chunk, never buffered whole.

Events are forwarded as soon as they are complete (a chunk may end mid-event). The
usage chunk is read to settle token budgets; when the client did not ask for it (the
gateway added ``include_usage`` itself) it is dropped. A failure after the first byte
cannot change the status any more: the stream ends with an ``event: error`` whose data
is the usual error body, and without ``data: [DONE]``, so clients see it was cut short.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from nexus.asgi import Headers, Receive, Send
from nexus.errors import UpstreamFailure
from nexus.transformer.upstream import Reply, Upstream, public_body

EVENT_END = b"\n\n"


@dataclass(slots=True)
class StreamOutcome:
    usage: dict[str, Any] | None = None
    first_byte_at: float | None = None
    failed: UpstreamFailure | None = None
    client_left: bool = False
    chunks: int = field(default=0)
    # ``data:`` events relayed (``[DONE]`` excluded): vLLM sends one generated token per
    # event, so this is what the client got when no usage chunk arrives.
    events: int = 0

    def streamed_tokens(self, prompt_estimate: int) -> int | None:
        """Tokens to charge when the usage chunk never came; ``None`` when nothing was sent.

        A client that hangs up (or a stream that breaks) before the usage chunk has still
        received ``events`` tokens and made the predictor read its prompt; refunding the
        reservation to zero let a key stream without limit (issue 12, item 3).
        """
        if self.usage is not None or self.first_byte_at is None:
            return None
        return prompt_estimate + self.events


def _usage_of(event: bytes) -> dict[str, Any] | None:
    """The ``usage`` object of one ``data:`` event, when it has a non-null one."""
    if not event.startswith(b"data:"):
        return None
    try:
        data = orjson.loads(event[5:])
    except orjson.JSONDecodeError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


def _filter(events: bytes, outcome: StreamOutcome, *, keep_usage_chunk: bool) -> bytes:
    """Forwardable bytes of complete events, recording (and maybe dropping) the usage chunk."""
    if b'"usage"' not in events:
        return events
    kept: list[bytes] = []
    for event in events.split(EVENT_END):
        if not event:
            continue
        usage = _usage_of(event)
        if usage is not None:
            outcome.usage = usage
            if not keep_usage_chunk and b'"choices":[]' in event.replace(b" ", b""):
                continue
        kept.append(event + EVENT_END)
    return b"".join(kept)


async def _watch_disconnect(receive: Receive, reply: Reply, outcome: StreamOutcome) -> None:
    """Stop reading the predictor as soon as the client hangs up."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            outcome.client_left = True
            reply.response.close()
            return


async def relay(
    *,
    send: Send,
    receive: Receive,
    upstream: Upstream,
    reply: Reply,
    headers: Headers,
    keep_usage_chunk: bool,
    started: float,
) -> StreamOutcome:
    """Relay one SSE answer; returns what happened for limits, metrics and logs.

    Raises the ``UpstreamFailure`` itself when the predictor fails before the first event,
    since nothing has been sent yet and a normal JSON error can still be answered.
    """
    outcome = StreamOutcome()
    start = {
        "type": "http.response.start",
        "status": reply.status,
        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                    *headers],
    }  # fmt: skip
    watcher = asyncio.create_task(_watch_disconnect(receive, reply, outcome))
    pending = b""
    try:
        async for chunk in upstream.chunks(reply):
            pending += chunk
            cut = pending.rfind(EVENT_END)
            if cut < 0:
                continue
            complete, pending = pending[: cut + 2], pending[cut + 2 :]
            outcome.events += complete.count(b"data:") - complete.count(b"data: [DONE]")
            out = _filter(complete, outcome, keep_usage_chunk=keep_usage_chunk)
            if out:
                if outcome.first_byte_at is None:
                    # Headers wait for the first event, so a predictor that fails before
                    # it still gets a JSON error (and an InferenceGraph fallback).
                    outcome.first_byte_at = time.perf_counter() - started
                    await send(start)
                outcome.chunks += 1
                await send({"type": "http.response.body", "body": out, "more_body": True})
    except UpstreamFailure as exc:
        if not outcome.client_left:
            outcome.failed = exc
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if outcome.client_left:
        upstream.abandon(reply)
        return outcome
    if outcome.failed is not None:
        upstream.settle(reply, ok=False)
        if outcome.first_byte_at is None:
            raise outcome.failed
        error = b"event: error\ndata: " + public_body(outcome.failed) + EVENT_END
        await send({"type": "http.response.body", "body": error, "more_body": False})
        return outcome
    upstream.settle(reply, ok=True)
    if outcome.first_byte_at is None:
        await send(start)
    await send({"type": "http.response.body", "body": pending, "more_body": False})
    return outcome
