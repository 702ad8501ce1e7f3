"""Time to the first streamed chunk, direct and through a proxy, over sequential requests.

A gateway that buffers a stream shows it here at once: with the upstream pausing between
tokens, the first chunk would arrive only when the whole answer had been generated.
Sequential requests keep each measurement free of queueing behind other requests.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import orjson


@dataclass(frozen=True, slots=True)
class StreamTiming:
    """Medians over the requests of one target, in milliseconds."""

    requests: int
    first_chunk_ms: float
    total_ms: float


async def _measure(
    url: str, *, body: bytes, headers: dict[str, str], requests: int
) -> StreamTiming:
    firsts: list[float] = []
    totals: list[float] = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(requests + 1):  # the first one warms connections up and is not counted
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as reply:
                if reply.status != 200:
                    text = await reply.text()
                    raise RuntimeError(f"streaming request to {url} got {reply.status}: {text}")
                first = await reply.content.readany()
                first_at = time.perf_counter()
                if not first.startswith(b"data:"):
                    raise RuntimeError(f"{url} did not answer server-sent events: {first[:80]!r}")
                while await reply.content.readany():
                    pass
                done_at = time.perf_counter()
            firsts.append((first_at - started) * 1000)
            totals.append((done_at - started) * 1000)
    return StreamTiming(
        requests=requests,
        first_chunk_ms=statistics.median(firsts[1:]),
        total_ms=statistics.median(totals[1:]),
    )


def measure(
    url: str,
    *,
    model: str,
    max_tokens: int,
    api_key: str,
    requests: int,
    headers: Mapping[str, str] | None = None,
) -> StreamTiming:
    """Stream ``max_tokens`` tokens ``requests`` times from ``url``; medians of both timings."""
    sent = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}",
            **(headers or {})}  # fmt: skip
    body = orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Tell me a story"}],
            "max_tokens": max_tokens,
            "stream": True,
        }
    )
    return asyncio.run(_measure(url, body=body, headers=sent, requests=requests))
