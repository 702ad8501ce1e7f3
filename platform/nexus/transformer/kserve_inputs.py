"""What the transformer checks of a KServe v1/v2 inference body before KServe decodes it.

Two things KServe 0.21 does not do for a transformer in front of an LLM predictor:

- ``DataPlane.decode_inference_request`` (``kserve/protocol/dataplane.py``, tag v0.21.0)
  calls ``int()`` on ``Inference-Header-Content-Length`` unguarded, so ``abc`` became a 500
  with a traceback (issue 12, item 10). The header is checked here: ASCII digits, at most
  the body's length, and the JSON part it delimits an object: KServe's
  ``InferRequest.from_bytes`` indexes that part, so ``null`` was a ``TypeError`` and a 500
  (found by ``tests/fuzz``).
- v1 ``instances`` and v2 ``inputs`` carry no token counts, so they were admitted at zero
  tokens while chats were limited (issue 12, item 5). They are charged the same
  four-characters-a-token estimate as OpenAI prompts, over the whole body (JSON text and
  any binary tensor data), and the charge is kept: no usage comes back to settle it.
"""

from __future__ import annotations

import orjson

from nexus.errors import InvalidRequest
from nexus.transformer.openai import CHARS_PER_TOKEN

BINARY_HEADER = b"inference-header-content-length"
MAX_DIGITS = 19


def check_binary_header(raw_headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Raise ``InvalidRequest`` unless the JSON-part length header is usable (or absent).

    Given twice it is refused: the transformer's header map keeps the last value while
    Starlette's ``Headers.__getitem__``, which KServe reads, returns the first.
    """
    values = [v for k, v in raw_headers if k == BINARY_HEADER]
    if not values:
        return
    if len(values) > 1:
        raise InvalidRequest(
            "header 'Inference-Header-Content-Length' is given more than once",
            param="Inference-Header-Content-Length",
        )
    value = values[0]
    text = value.strip()
    if not text or len(text) > MAX_DIGITS or not text.isdigit():
        raise InvalidRequest(
            "header 'Inference-Header-Content-Length' must be a non-negative integer",
            param="Inference-Header-Content-Length",
        )
    length = int(text)
    if length > len(body):
        raise InvalidRequest(
            f"header 'Inference-Header-Content-Length' is {length}, longer than the"
            f" {len(body)}-byte body",
            param="Inference-Header-Content-Length",
        )
    try:
        part = orjson.loads(body[:length])
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "the JSON part that 'Inference-Header-Content-Length' delimits is not valid JSON",
            param="Inference-Header-Content-Length",
        ) from None
    if not isinstance(part, dict):
        raise InvalidRequest(
            "the JSON part that 'Inference-Header-Content-Length' delimits must be an object",
            param="Inference-Header-Content-Length",
        )


def token_estimate(body: bytes) -> int:
    """Tokens charged for a v1/v2 inference body: its length at four characters a token."""
    return len(body) // CHARS_PER_TOKEN + 1
