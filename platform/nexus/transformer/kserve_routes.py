"""KServe's metadata and v1/v2 inference routes, governed here and answered by KServe's app.

The principal is authenticated by the caller (``app.Transformer``); these handlers check model
access, read and check the body, take the limits and hand the request to KServe's app,
copying its status into the ``Exchange`` and adding the rate-limit headers to its answer.
Probes are answered without KServe's app while it is not built (``probe_answer``).
"""

from __future__ import annotations

import re
from collections.abc import Collection

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

_MODEL_PROBE = re.compile(r"/v2/models/(?P<v2>[^/]+)/ready|/v1/models/(?P<v1>[^/:]+)")


def probe_answer(method: str, path: str, models: Collection[str]) -> dict[str, object] | None:
    """KServe's 200 body for a ``GET`` probe of a transformer that has served nothing else.

    Until its app is built KServe's registry is the one ``kserve_bridge`` starts with: every
    public name, one ``ProxyModel`` that is ready, and no predictor health check. KServe 0.21
    then answers (``DataPlane.live``, ``ready``, ``model_ready`` in
    ``kserve/protocol/dataplane.py``; ``v1_endpoints.py``, ``v2_endpoints.py``) the bodies
    below; ``tests/transformer/test_lean_start.py`` compares each with KServe's own app.
    ``None`` for anything else (another method, a name not served: KServe's errors), which
    KServe's app answers.
    """
    if method != "GET":
        return None
    if path == "/":
        return {"status": "alive"}
    if path == "/v2/health/live":
        return {"live": True}
    if path == "/v2/health/ready":
        return {"ready": True}
    found = _MODEL_PROBE.fullmatch(path)
    name = (found["v2"] or found["v1"]) if found else None
    if name and name in models:
        return {"name": name, "ready": True}
    return None


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
