"""The floor: a minimal ASGI pass-through with an aiohttp client, served like the router.

Issue 3 states the router's targets next to what such a pass-through measured on the
issue author's machine. Measured here in the same run, it says how far this machine's
floor is from that one, and how much the router adds above the floor: one POST forwarded
with its body, the answer returned with its status and a Content-Type, nothing else.

    python bench/passthrough.py --upstream http://127.0.0.1:9100/v1/chat/completions --port 8081
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn


class PassThrough:
    """ASGI callable: the request body to ``upstream``, its answer back."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http" or self.session is None:
            return
        body = (await receive()).get("body", b"")  # the benchmark's bodies come in one message
        headers = {"Content-Type": "application/json"}
        async with self.session.post(self.upstream, data=body, headers=headers) as reply:
            answer = await reply.read()
            status = reply.status
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(answer)).encode()),
                        (b"content-type", b"application/json")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": answer})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(PassThrough(args.upstream), host="127.0.0.1", port=args.port, loop="uvloop",
                http="httptools", access_log=False, log_level="warning")  # fmt: skip


if __name__ == "__main__":
    main()
