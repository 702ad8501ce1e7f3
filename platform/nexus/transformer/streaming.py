"""The transformer's streamed answers: the shared relay with usage read on the way.

``edge/sse.py`` does the relaying (disconnects, breaks, the error event); here it gets the
transformer's parts: ``usage.StreamUsage`` as its chunk filter, a head that waits for the
first event (so a predictor that fails before it still gets a JSON error, and an
InferenceGraph fallback), the public error body, and the breaker's verdict on the call.
"""

from __future__ import annotations

from nexus.edge.asgi import HTTPResponseStartEvent, Receive, Send
from nexus.edge.failures import TransportError
from nexus.edge.sse import relay
from nexus.observability import TransformerMetrics
from nexus.transformer.components import Exchange
from nexus.transformer.upstream import PredictorReply, Upstream, public_body
from nexus.transformer.usage import StreamUsage, Usage


async def relay_stream(
    *,
    send: Send,
    receive: Receive,
    upstream: Upstream,
    reply: PredictorReply,
    ex: Exchange,
    metrics: TransformerMetrics,
    keep_usage_chunk: bool,
    prompt_estimate: int,
) -> Usage | None:
    """Relay one SSE answer into ``ex``; returns the usage to settle.

    Raises an ``UpstreamFailure`` when the predictor fails before the first event, since
    nothing has been sent yet and a normal JSON error can still be answered. After it, the
    client already has its 200 head: the log line and the request metrics say what
    happened (502/504, or 499 when the client left), as the router's do (issue 11).
    """
    usage = StreamUsage(keep_usage_chunk=keep_usage_chunk)
    head: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": reply.status,
        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                    *ex.headers],
    }  # fmt: skip
    try:
        relayed = await relay(
            upstream.chunks(reply),
            receive=receive,
            send=send,
            head=head,
            on_break=lambda exc: upstream.failure(exc, "stream"),
            render=public_body,
            chunk_filter=usage,
            head_waits=True,
        )
    except TransportError as exc:
        upstream.settle(reply, ok=False)
        raise upstream.failure(exc, "stream") from exc
    except BaseException:
        upstream.abandon(reply)  # cancelled (shutdown): no verdict on the predictor
        raise
    if relayed.client_left:
        upstream.abandon(reply)
    else:
        upstream.settle(reply, ok=relayed.error is None)
    ex.status = relayed.status
    if relayed.error is not None:
        ex.error = relayed.error.message
    sent = relayed.head_at is not None
    if relayed.head_at is not None:
        metrics.ttft.observe(relayed.head_at - ex.started)
    return usage.charged(prompt_estimate=prompt_estimate, sent=sent)
