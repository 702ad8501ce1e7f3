"""KServe's metadata and v1/v2 inference routes, governed here and answered by KServe's app.

The principal is authenticated by the caller (``app.Transformer``); these handlers check model
access, read and check the body, take the limits and hand the request to KServe's app,
copying its status into the ``Exchange`` and adding the rate-limit headers to its answer.
"""

from __future__ import annotations

from nexus.auth import Principal
from nexus.edge.asgi import (
    ForeignApp,
    HTTPScope,
    Receive,
    Send,
    SendEvent,
    header,
    read_body,
    replay,
)
from nexus.transformer import kserve_inputs
from nexus.transformer.components import Components, Exchange


def _recording(send: Send, ex: Exchange) -> Send:
    """``send`` that notes the status and appends the exchange's headers to the answer."""

    async def send_recorded(message: SendEvent) -> None:
        if message["type"] == "http.response.start":
            ex.status = message["status"]
            message["headers"] = [*message.get("headers", []), *ex.headers]
        await send(message)

    return send_recorded


async def metadata(
    kserve_app: ForeignApp,
    parts: Components,
    principal: Principal,
    scope: HTTPScope,
    receive: Receive,
    send: Send,
    ex: Exchange,
    *,
    model: str | None,
) -> None:
    """KServe's server and model metadata, for a credential that may see the model."""
    if model is not None:
        parts.governor.check_model(principal, model)
        ex.model = model
    await kserve_app(scope, receive, _recording(send, ex))


async def inference(
    kserve_app: ForeignApp,
    parts: Components,
    principal: Principal,
    scope: HTTPScope,
    receive: Receive,
    send: Send,
    ex: Exchange,
    *,
    model: str,
    max_body_bytes: int,
    fallback: bool,
) -> None:
    """KServe v1/v2 inference: governed here, decoded and proxied by KServe's app."""
    ex.model = model
    content_length = header(scope["headers"], b"content-length")
    raw = await read_body(receive, limit=max_body_bytes, content_length=content_length)
    kserve_inputs.check_binary_header(scope["headers"], raw)
    admission = await parts.governor.admit(
        principal, model, kserve_inputs.token_estimate(raw), fallback=fallback
    )
    ex.headers += admission.headers()
    ex.upstream = parts.upstream.name
    scope["headers"] = [
        *(h for h in scope["headers"] if h[0] != b"x-request-id"),
        (b"x-request-id", ex.request_id.encode()),
    ]
    try:
        await kserve_app(scope, replay(raw, receive), _recording(send, ex))
    finally:
        if not 200 <= ex.status < 400:
            # As on the OpenAI routes: a refused or failed call costs no tokens.
            await parts.governor.settle(admission, None)
