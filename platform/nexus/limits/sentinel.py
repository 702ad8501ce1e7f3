"""Redis Sentinel for the limiter: the master asked of the sentinels, and asked again.

Each sentinel of the URL is asked in turn ``SENTINEL GET-MASTER-ADDR-BY-NAME <master>``
(``src/sentinel.c`` sentinelCommand: the address of the master as this sentinel knows
it, the promoted replica once it has switched, a null array for an unknown name). The
address is checked with ``ROLE`` (``src/replication.c`` roleCommand answers ``master``
first on a master), since a sentinel cut off from the others may still name the old
one. The client asks again when the master's connection fails and when it answers
``-READONLY`` (it was demoted to a replica: ``src/server.c`` processCommand, and
``src/script.c`` scriptPrepareForRun for a script with writes), retrying the call once
on the new master if the sentinels already name another.

Sentinels are asked without credentials; with ``rediss+sentinel://`` they are asked over
TLS like the master, verified with the same context (so one CA, or one bundle, must cover
both). The URL's credentials and database are the master's.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from nexus.config import RedisTarget
from nexus.limits.resp import Endpoint, RedisReplyError, RedisUnavailable, RespClient, encode

log = logging.getLogger("nexus.limits")


class SentinelClient:
    """A ``RespClient`` on the master the sentinels name, replaced when it changes."""

    def __init__(self, target: RedisTarget, *, tls: ssl.SSLContext | None = None) -> None:
        if target.master is None:
            raise ValueError("a Sentinel target names its master")
        self._target = target
        self._tls = tls  # the sentinels' and the master's, with rediss+sentinel://
        self._name = target.master
        self._sentinels = list(target.nodes)
        self._master: RespClient | None = None
        self._asking: asyncio.Lock | None = None

    async def call(self, *args: str | int | bytes, key: str | None = None) -> Any:
        return await self.call_encoded(encode(*args), key=key)

    async def call_encoded(self, command: bytes, *, key: str | None = None) -> Any:
        master = self._master or await self._discover(None)
        try:
            return await master.call_encoded(command)
        except RedisUnavailable:
            failed = master
        except RedisReplyError as exc:
            if not str(exc).startswith("READONLY"):
                raise
            failed = master
        current = await self._discover(failed)
        if current.endpoint == failed.endpoint:
            raise RedisUnavailable(
                f"Redis master {self._name!r} at {failed.endpoint.host}:{failed.endpoint.port}"
                " is not writable and the sentinels name no other yet"
            )
        return await current.call_encoded(command)

    async def _discover(self, failed: RespClient | None) -> RespClient:
        """The master the sentinels name now; ``failed`` is the one that just failed."""
        if self._asking is None:
            self._asking = asyncio.Lock()
        async with self._asking:
            if self._master is not None and self._master is not failed:
                return self._master  # another call found it meanwhile
            if failed is not None:
                await failed.close()
            errors: list[str] = []
            for i, (host, port) in enumerate(self._sentinels):
                try:
                    master = await self._ask(host, port)
                except (RedisUnavailable, RedisReplyError) as exc:
                    errors.append(f"{host}:{port}: {exc}")
                    continue
                # The sentinel that answered is asked first next time.
                self._sentinels.insert(0, self._sentinels.pop(i))
                if self._master is None or master.endpoint != self._master.endpoint:
                    where = master.endpoint
                    log.warning("Redis master %r is at %s:%d", self._name, where.host, where.port)
                self._master = master
                return master
            self._master = None
            raise RedisUnavailable(f"no sentinel named master {self._name!r}: " + "; ".join(errors))

    async def _ask(self, host: str, port: int) -> RespClient:
        sentinel = RespClient(Endpoint(host, port, 0, None, None, self._target.tls), tls=self._tls)
        try:
            reply = await sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self._name)
        finally:
            await sentinel.close()
        if not reply:
            raise RedisReplyError(f"this sentinel does not know master {self._name!r}")
        master = RespClient(
            Endpoint.of(self._target, reply[0].decode(), int(reply[1])), tls=self._tls
        )
        try:
            role = await master.call("ROLE")
        except (RedisUnavailable, RedisReplyError):
            await master.close()
            raise
        if role[0] != b"master":
            await master.close()
            raise RedisReplyError(f"{reply[0].decode()}:{int(reply[1])} is a {role[0].decode()}")
        return master

    async def close(self) -> None:
        if self._master is not None:
            await self._master.close()
            self._master = None
