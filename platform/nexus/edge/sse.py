"""The one SSE relay both servers use: upstream chunks to the client, as they arrive.

The upstream body comes as an ``AsyncIterator[bytes]`` that raises
``nexus.edge.failures.TransportError`` when the upstream breaks. Three endings:

- **clean**: the last bytes go out with ``more_body: False``; the head's status is kept;
- **upstream break after the first byte**: the status cannot change any more, so the
  stream ends with ``event: error`` (after a blank line when the bytes sent so far stop
  mid-event, so clients still parse it) and without ``data: [DONE]``; the outcome carries
  the error's status (502, or 504 for a stall) for the log line and metrics;
- **client leaves**: a watcher task reading ``receive`` cancels the relaying task at once,
  which closes the upstream read wherever it waits (and ``aclose`` finishes an iterator
  left at a ``yield``), so a model stops generating for nobody even while it sends
  nothing; the outcome says 499.

A ``head_waits`` relay sends its head only with the first forwarded bytes: a break before
then re-raises the ``TransportError``, and the caller can still answer a JSON error (and
a graph can still fall back). A ``ChunkFilter`` sees every chunk first (the transformer
reads and drops usage chunks there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from nexus.edge.asgi import HTTPResponseStartEvent, Receive, Send
from nexus.edge.failures import TransportError
from nexus.errors import NexusError

EVENT_END = b"\n\n"
CLIENT_CLOSED = 499  # nginx's code for a client that closed the connection first


class ChunkFilter(Protocol):
    """Sees every upstream chunk before the client; returns what to forward now."""

    def __call__(self, chunk: bytes) -> bytes: ...

    def rest(self) -> bytes:
        """What is still held back when the upstream ends cleanly."""
        ...


@dataclass(slots=True)
class Relayed:
    """What a relay amounted to, for the caller's log line, metrics and limits."""

    status: int
    head_at: float | None = None  # perf_counter() when the head went out
    error: NexusError | None = None  # the upstream break told to the client

    @property
    def client_left(self) -> bool:
        return self.status == CLIENT_CLOSED


async def relay(
    chunks: AsyncIterator[bytes],
    *,
    receive: Receive,
    send: Send,
    head: HTTPResponseStartEvent,
    on_break: Callable[[TransportError], NexusError],
    render: Callable[[NexusError], bytes],
    chunk_filter: ChunkFilter | None = None,
    head_waits: bool = False,
) -> Relayed:
    """Relay one event stream; ``on_break`` names the error an upstream break becomes.

    ``render`` gives the ``data:`` of the error event (the transformer hides internal
    details there). Raises the ``TransportError`` only when ``head_waits`` and nothing was
    sent yet; any other cancellation (a server deadline, shutdown) propagates as usual.
    """
    task = asyncio.current_task()
    assert task is not None
    outcome = Relayed(status=head["status"])
    cancellations = task.cancelling()
    finishing = False

    def leave() -> None:
        if not finishing:
            outcome.status = CLIENT_CLOSED
            task.cancel()

    watcher = asyncio.create_task(_watch(receive, leave))
    ended = True  # whether the bytes sent so far end on an event boundary
    try:
        if not head_waits:
            await _start(send, head, outcome)
        async for chunk in chunks:
            out = chunk if chunk_filter is None else chunk_filter(chunk)
            if not out:
                continue
            if outcome.head_at is None:
                await _start(send, head, outcome)
            await send({"type": "http.response.body", "body": out, "more_body": True})
            ended = out.endswith(EVENT_END)
        rest = b"" if chunk_filter is None else chunk_filter.rest()
        if outcome.head_at is None:
            await _start(send, head, outcome)
        finishing = True
        await send({"type": "http.response.body", "body": rest, "more_body": False})
    except TransportError as exc:
        finishing = True
        if outcome.head_at is None:
            raise
        error = on_break(exc)
        outcome.status, outcome.error = error.status, error
        event = (b"" if ended else EVENT_END) + b"event: error\ndata: " + render(error) + EVENT_END
        await send({"type": "http.response.body", "body": event, "more_body": False})
    except asyncio.CancelledError:
        # Ours only when the client left and nobody else (a deadline) cancelled as well.
        if not outcome.client_left or task.uncancel() > cancellations:
            raise
    finally:
        finishing = True
        watcher.cancel()
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()  # an iterator left at a yield closes its connection now
    return outcome


async def _start(send: Send, head: HTTPResponseStartEvent, outcome: Relayed) -> None:
    outcome.head_at = time.perf_counter()
    await send(head)


async def _watch(receive: Receive, leave: Callable[[], None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    leave()
