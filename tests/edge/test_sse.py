"""The shared SSE relay (``nexus.edge.sse``) against ASGI ``receive``/``send`` of its own.

Both servers' relays go through this function; their real-process tests are in
``tests/router/test_midstream.py`` and ``tests/transformer/test_midstream.py``. Here the
ordering guarantees are pinned where a process test cannot reach them: an upstream left
waiting is closed the moment the client leaves, a server deadline still propagates, a
half-sent event is ended before the error event, and a head that waits is never sent
when the upstream breaks first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nexus.edge.asgi import HTTPResponseStartEvent, ReceiveEvent, SendEvent
from nexus.edge.failures import ConnectionBroken, TransportError
from nexus.edge.sse import CLIENT_CLOSED, Relayed, relay
from nexus.errors import NexusError, UpstreamUnavailable

HEAD: HTTPResponseStartEvent = {"type": "http.response.start", "status": 200, "headers": []}


class Client:
    """An ASGI client side: what was sent to it, and a switch to hang up."""

    def __init__(self) -> None:
        self.sent: list[SendEvent] = []
        self._gone = asyncio.Event()

    async def receive(self) -> ReceiveEvent:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: SendEvent) -> None:
        self.sent.append(message)

    def leave(self) -> None:
        self._gone.set()

    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.sent if m["type"] == "http.response.body")


class Upstream:
    """An upstream body that sends ``chunks``, then breaks, stalls, or ends."""

    def __init__(self, chunks: list[bytes], *, then: str) -> None:
        self.chunks, self.then = chunks, then
        self.closed = asyncio.Event()

    async def __call__(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                yield chunk
            if self.then == "break":
                raise ConnectionBroken
            if self.then == "stall":
                await asyncio.Event().wait()
        finally:
            self.closed.set()


def _broken(exc: TransportError) -> NexusError:
    return UpstreamUnavailable(f"broke: {exc.reason}")


async def _relay(client: Client, upstream: Upstream, *, head_waits: bool = False) -> Relayed:
    return await relay(
        upstream(),
        receive=client.receive,
        send=client.send,
        head=HEAD,
        on_break=_broken,
        render=NexusError.body_bytes,
        head_waits=head_waits,
    )


async def test_a_clean_stream_ends_with_the_head_status_and_every_byte() -> None:
    client, upstream = Client(), Upstream([b"data: 1\n\n", b"data: [DONE]\n\n"], then="end")
    outcome = await _relay(client, upstream)
    assert outcome.status == 200
    assert client.body() == b"data: 1\n\ndata: [DONE]\n\n"
    assert client.sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_break_ends_the_half_sent_event_then_sends_the_error_event() -> None:
    client, upstream = Client(), Upstream([b"data: 1\n\n", b'data: {"n'], then="break")
    outcome = await _relay(client, upstream)
    assert outcome.status == 502
    body = client.body()
    assert body.startswith(b'data: 1\n\ndata: {"n\n\nevent: error\ndata: {')
    assert body.endswith(b"\n\n")
    assert b"[DONE]" not in body
    assert b"broke: EOF" in body


async def test_a_client_leaving_closes_a_silent_upstream_at_once() -> None:
    client, upstream = Client(), Upstream([b"data: 1\n\n"], then="stall")
    task = asyncio.create_task(_relay(client, upstream))
    await asyncio.sleep(0.01)
    assert client.body() == b"data: 1\n\n"
    client.leave()
    outcome = await asyncio.wait_for(task, timeout=1)
    assert outcome.status == CLIENT_CLOSED
    assert upstream.closed.is_set()
    assert not task.cancelled()


async def test_a_deadline_still_cancels_the_relay_and_closes_the_upstream() -> None:
    client, upstream = Client(), Upstream([b"data: 1\n\n"], then="stall")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await _relay(client, upstream)
    assert upstream.closed.is_set()


async def test_a_waiting_head_is_not_sent_when_the_upstream_breaks_first() -> None:
    client, upstream = Client(), Upstream([], then="break")
    with pytest.raises(ConnectionBroken):
        await _relay(client, upstream, head_waits=True)
    assert client.sent == []
    assert upstream.closed.is_set()
