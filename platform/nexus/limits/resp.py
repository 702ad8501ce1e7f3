"""A lean Redis client for the limiter's hot path: one connection, pipelined, hiredis parsing.

Measured by ``bench/resp.py`` (2026-12-03, 2 CPUs shared with other work, load average
~16, so absolute figures are high): client CPU per ``EVALSHA`` of a trivial script is
86 µs here against redis-py's 311 µs one call at a time (225 µs saved), and 32 µs against
174 µs in bursts of 32 concurrent calls (142 µs saved). redis-py's asyncio client pays for
a pool checkout, a retry wrapper and hooks per call. The limiter needs two commands
(``EVALSHA``/``SCRIPT LOAD``) on a single connection, so this client keeps exactly that:
commands from concurrent requests are written together once per event-loop tick and their
replies, which Redis returns in order, resolve a FIFO of futures; one timer watches the
oldest command's deadline. Parsing is hiredis'.

Failures (refused, reset, timeout, an error reply) raise ``RedisUnavailable`` or
``RedisReplyError``; the next call after a broken connection reconnects.

``RespClient`` talks to one node. ``cluster.ClusterClient`` and ``sentinel.SentinelClient``
route the same calls over several (``connect.connect`` picks one by URL scheme); every
call names the key it touches (``key=``) so a Cluster client can route it by slot.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import hiredis

from nexus.config import RedisTarget, parse_redis_url

# A connect (with TLS, the handshake too) may take this long. 0.25 s was too short for a
# loopback connect on a loaded CI machine; a refused connect fails at once whatever this is,
# and a silent host costs one request this long per ``limits.REDIS_RETRY_SECONDS``.
CONNECT_TIMEOUT_SECONDS = 1.0
COMMAND_TIMEOUT_SECONDS = 0.5


class RedisUnavailable(ConnectionError):
    """Redis cannot be reached or stopped answering."""


class RedisReplyError(Exception):
    """Redis answered a command with an error (e.g. ``NOSCRIPT``, ``OOM``)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        """One node's ``redis://`` or ``rediss://`` URL (``nexus.config.parse_redis_url``)."""
        target = parse_redis_url(url)
        if target.kind != "single":
            raise ValueError(f"{url.partition(':')[0]}:// names several nodes, not one")
        return cls.of(target, *target.nodes[0])

    @classmethod
    def of(cls, target: RedisTarget, host: str, port: int) -> Endpoint:
        """A data node of ``target``: its credentials, database and TLS."""
        return cls(host, port, target.db, target.username, target.password, target.tls)


class Redis(Protocol):
    """What the limiter needs of Redis, whether one node, a Cluster or behind Sentinels."""

    async def call(self, *args: str | int | bytes, key: str | None = None) -> Any: ...

    async def call_encoded(self, command: bytes, *, key: str | None = None) -> Any: ...

    async def close(self) -> None: ...


def encode(*args: str | int | bytes) -> bytes:
    """A command in RESP: an array of bulk strings."""
    return b"*%d\r\n%s" % (len(args), bulk(args))


def bulk(args: Iterable[str | int | bytes]) -> bytes:
    """``args`` as consecutive RESP bulk strings, without the array header."""
    out = []
    for arg in args:
        if isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int):
            data = b"%d" % arg
        else:
            data = arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        # Made by loop.create_connection, so inside the loop that will serve it.
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        # Replies arrive in order, so only the oldest command's deadline needs watching:
        # one timer for the connection instead of one per command.
        self.deadlines: deque[float] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._outgoing: list[bytes] = []

    def send(
        self, command: bytes, future: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        """Queue a command; everything queued in one event-loop tick goes out in one write."""
        self.waiting.append(future)
        self.deadlines.append(loop.time() + COMMAND_TIMEOUT_SECONDS)
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(command)
        if self._watchdog is None:
            self._watchdog = loop.call_at(self.deadlines[0], self._check, loop)

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self.transport is None or self.transport.is_closing():
            self.fail(RedisUnavailable("connection to Redis is closing"))
            return
        self.transport.write(data)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog = None
        if self.deadlines and self.deadlines[0] <= loop.time():
            # A reply is overdue: fail everything waiting and drop the connection, whose
            # reply order can no longer be trusted.
            self.fail(RedisUnavailable("Redis did not answer in time"))
            if self.transport is not None:
                self.transport.abort()
            return
        if self.deadlines:
            self._watchdog = loop.call_at(self.deadlines[0], self._check, loop)

    def fail(self, error: BaseException) -> None:
        self.lost = self.lost or error
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
        self.deadlines.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.waiting:
                continue  # a reply nobody waits for any more: drop it
            future = self.waiting.popleft()
            self.deadlines.popleft()
            if future.done():
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(RedisReplyError(str(reply)))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = exc or "Redis closed the connection"
        self.fail(RedisUnavailable(f"connection to Redis lost: {reason}"))
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


class RespClient:
    """Pipelined commands over one lazily (re)connected connection.

    ``tls`` verifies a TLS endpoint (``nexus.config.RedisTls.context``: extra CAs, a client
    certificate); without one, ``ssl.create_default_context()`` (the system's CAs).
    """

    def __init__(self, endpoint: Endpoint, *, tls: ssl.SSLContext | None = None) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    async def call(self, *args: str | int | bytes, key: str | None = None) -> Any:
        return await self.call_encoded(encode(*args))

    async def call_encoded(self, command: bytes, *, key: str | None = None) -> Any:
        """Send a command already in RESP (``encode``) and wait for its reply; ``key`` is
        for routing clients (one node has nothing to route)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:  # not a coroutine per command
            protocol = await self._connection()
        loop = protocol.loop  # asyncio.get_running_loop() is a getpid() system call
        future: asyncio.Future[Any] = loop.create_future()
        protocol.send(command, future, loop)
        return await future

    async def call_asking(self, command: bytes) -> Any:
        """``ASKING`` then ``command``, back to back on the connection, as a Cluster ``-ASK``
        redirection requires (``src/cluster.c`` askingCommand: the flag lasts one command)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connection()
        loop = protocol.loop
        asking: asyncio.Future[Any] = loop.create_future()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.send(encode("ASKING"), asking, loop)
        protocol.send(command, future, loop)
        await asyncio.gather(asking, future, return_exceptions=True)
        asking.result()
        return future.result()

    async def _connection(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None and self._protocol.lost is None:
                return self._protocol
            self._protocol = await self._connect()
            return self._protocol

    async def _connect(self) -> _Protocol:
        endpoint = self._endpoint
        loop = asyncio.get_running_loop()
        context = (self._tls or ssl.create_default_context()) if endpoint.tls else None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                _, protocol = await loop.create_connection(
                    _Protocol, endpoint.host, endpoint.port, ssl=context
                )
        except ssl.SSLCertVerificationError as exc:
            # Before OSError, its base: name the one thing the operator has to fix.
            raise RedisUnavailable(
                f"TLS certificate verification failed for Redis at {endpoint.host}:"
                f"{endpoint.port}: {exc.verify_message} (is its CA in GATEWAY_REDIS_CA_FILE"
                " or _CA_PEM, and the URL's host among its names?)"
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise RedisUnavailable(
                f"cannot connect to Redis at {endpoint.host}:{endpoint.port}: {exc}"
            ) from exc
        # Commands sent before the rest of the client sees the connection: AUTH and SELECT.
        setup: list[tuple[str | int, ...]] = []
        if endpoint.password is not None:
            setup.append(
                ("AUTH", endpoint.username, endpoint.password)
                if endpoint.username
                else ("AUTH", endpoint.password)
            )
        if endpoint.db:
            setup.append(("SELECT", endpoint.db))
        for command in setup:
            future: asyncio.Future[Any] = loop.create_future()
            protocol.send(encode(*command), future, loop)
            try:
                await future
            except (RedisReplyError, RedisUnavailable) as exc:
                self._drop(protocol)
                raise RedisUnavailable(f"Redis refused {command[0]}: {exc}") from exc
        return protocol

    def _drop(self, protocol: _Protocol) -> None:
        if protocol.transport is not None:
            protocol.transport.abort()
        if self._protocol is protocol:
            self._protocol = None

    async def close(self) -> None:
        if self._protocol is not None:
            self._drop(self._protocol)


class Script:
    """A Lua script called by SHA, sent whole on first use and again after ``NOSCRIPT``.

    A limiter calls the same script on the same few keys for every request, so the
    command's head (``EVALSHA``, the SHA, the keys) is encoded once per key set and kept;
    only the arguments are encoded per call. The cache is dropped whole when it passes
    ``MAX_CACHED_KEY_SETS`` (JWT subjects make the set of keys open-ended).
    """

    MAX_CACHED_KEY_SETS = 4096

    def __init__(self, client: Redis, source: str) -> None:
        self._client = client
        self._source = source
        self._sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()
        self._heads: dict[tuple[str, ...], bytes] = {}

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        command = self._command(tuple(keys), args)
        key = keys[0] if keys else None  # the node that runs it must hold the script
        try:
            return await self._client.call_encoded(command, key=key)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # EVAL runs it and caches it on whichever node the key's call reaches, even one a
        # Cluster's -ASK redirection points to: SCRIPT LOAD would go to the slot's owner.
        return await self._client.call("EVAL", self._source, len(keys), *keys, *args, key=key)

    def _command(self, keys: tuple[str, ...], args: Sequence[str | int]) -> bytes:
        head = self._heads.get(keys)
        if head is None:
            if len(self._heads) >= self.MAX_CACHED_KEY_SETS:
                self._heads.clear()
            head = self._heads[keys] = bulk(("EVALSHA", self._sha, len(keys), *keys))
        return b"*%d\r\n%s%s" % (3 + len(keys) + len(args), head, bulk(args))
