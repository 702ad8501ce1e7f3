"""The floors: minimal ASGI pass-throughs on the servers' own stack, with two kinds of client.

Both hops are measured against what a Python hop of their shape can reach on the same
machine in the same run: uvicorn with httptools and uvloop (as the router and the
transformer run) forwarding one POST with its body and returning the answer with its
status and a Content-Type, nothing else. The floors differ only in the upstream hop:

- ``--client aiohttp``: an aiohttp session (what both servers use today), and with
  ``--redis`` one EVALSHA per request through redis-py;
- ``--client lean``: keep-alive raw asyncio connections parsed by httptools
  (``raw_http.py``), and with ``--redis`` one EVALSHA per request over one pipelined RESP
  connection read by hiredis (``nexus.limits.resp``);
- ``--client nexus`` (with ``--server edge``): the same shape on Nexus' own client and
  server protocol, for ``costs.py``.

The Redis variants stand for the transformer's one limiter call per request. Started by
``servers.start_passthrough``; by hand:

    python -m bench.passthrough --upstream http://127.0.0.1:9100/v1/chat/completions \\
        --port 8081 [--client lean] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import redis.asyncio as redis_py
import uvicorn

from bench.raw_http import Pool
from nexus.edge.asgi import serve_lifespan
from nexus.edge.client import HttpClient, Origin
from nexus.edge.protocol import EdgeLimits, serve
from nexus.limits.resp import Endpoint, RespClient, Script

# One key, one write: the shape of a limiter call, not its arithmetic.
SCRIPT = "return redis.call('INCR', KEYS[1])"
KEYS = ["bench:floor"]
Forward = Callable[[bytes], Awaitable[tuple[int, bytes]]]
Resource = Callable[[], Awaitable[object]]


async def aiohttp_client(upstream: str, redis_url: str | None) -> tuple[Forward, Resource]:
    """The aiohttp floor: a session without a connection limit, redis-py for the script."""
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    headers = {"Content-Type": "application/json"}
    redis = None if redis_url is None else redis_py.Redis.from_url(redis_url)
    script = None if redis is None else redis.register_script(SCRIPT)

    async def forward(body: bytes) -> tuple[int, bytes]:
        if script is not None:
            await script(keys=KEYS, args=[])
        async with session.post(upstream, data=body, headers=headers) as reply:
            return reply.status, await reply.read()

    async def close() -> None:
        await session.close()
        if redis is not None:
            await redis.aclose()

    return forward, close


async def lean_client(upstream: str, redis_url: str | None) -> tuple[Forward, Resource]:
    """The lean floor: raw keep-alive connections, the hiredis RESP client for the script."""
    url = urlsplit(upstream)
    pool = Pool(url.hostname or "127.0.0.1", url.port or 80)
    path = url.path or "/"
    resp = None if redis_url is None else RespClient(Endpoint.from_url(redis_url))
    script = None if resp is None else Script(resp, SCRIPT)

    async def forward(body: bytes) -> tuple[int, bytes]:
        if script is not None:
            await script(keys=KEYS, args=[])
        return await pool.post(path, body)

    async def close() -> None:
        pool.close()
        if resp is not None:
            await resp.close()

    return forward, close


async def nexus_client(upstream: str, redis_url: str | None) -> tuple[Forward, Resource]:
    """Nexus' own upstream client (``nexus.edge.client``: timeouts, pool checks, retries of
    idempotent calls) and its RESP client, on the lean floor's shape: what the floor
    becomes on the servers' own parts, before any governance (``python -m bench costs``)."""
    origin, path = Origin.of(upstream)
    client = HttpClient(connect_timeout=60.0, read_timeout=60.0)
    resp = None if redis_url is None else RespClient(Endpoint.from_url(redis_url))
    script = None if resp is None else Script(resp, SCRIPT)
    headers = (("Content-Type", "application/json"),)

    async def forward(body: bytes) -> tuple[int, bytes]:
        if script is not None:
            await script(keys=KEYS, args=[])
        reply = await client.request("POST", origin, path, headers=headers, body=body)
        return reply.status, await reply.read()

    async def close() -> None:
        await client.close()
        if resp is not None:
            await resp.close()

    return forward, close


CLIENTS = {"aiohttp": aiohttp_client, "lean": lean_client, "nexus": nexus_client}


class PassThrough:
    """ASGI callable: the request body to the upstream, its answer back."""

    def __init__(self, *, client: str, upstream: str, redis_url: str | None) -> None:
        self.make = CLIENTS[client]
        self.upstream, self.redis_url = upstream, redis_url
        self.forward: Forward | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http" or self.forward is None:
            return
        body = (await receive()).get("body", b"")  # the benchmark's bodies come in one message
        status, answer = await self.forward(body)
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-length", str(len(answer)).encode()),
                        (b"content-type", b"application/json")],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": answer})

    async def lifespan(self, receive: Any, send: Any) -> None:
        close: Resource | None = None

        async def startup() -> None:
            nonlocal close
            self.forward, close = await self.make(self.upstream, self.redis_url)

        async def shutdown() -> None:
            if close is not None:
                await close()

        await serve_lifespan(receive, send, startup=startup, shutdown=shutdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--client", choices=sorted(CLIENTS), default="aiohttp")
    parser.add_argument("--redis", default=None, help="one EVALSHA per request to this Redis")
    parser.add_argument("--server", choices=("uvicorn", "edge"), default="uvicorn",
                        help="edge: Nexus' EdgeProtocol, as both servers run")  # fmt: skip
    args = parser.parse_args()
    app = PassThrough(client=args.client, upstream=args.upstream, redis_url=args.redis)
    options: dict[str, Any] = {"host": "127.0.0.1", "port": args.port, "loop": "uvloop",
                               "access_log": False, "log_level": "warning"}  # fmt: skip
    if args.server == "edge":
        serve(app, limits=EdgeLimits(), **options)
    else:
        uvicorn.run(app, http="httptools", **options)


if __name__ == "__main__":
    main()
