"""Redis Cluster for the limiter: calls routed by hash slot, redirections followed.

The slot map comes from ``CLUSTER SLOTS`` (``src/cluster.c`` clusterCommandSlots: one
entry per slot range, its master first; a ``?`` or null endpoint means the node asked),
asked of the seed nodes of the URL and then of any node known. A ``-MOVED slot host:port``
reply moves that slot at once and refreshes the whole map in the background (a MOVED
means nodes changed); ``-ASK`` resends the one command to the named node behind
``ASKING`` (``src/cluster.c`` clusterRedirectClient, getNodeByQuery). A node that cannot be
reached makes the client ask the others for the map again and retry once if the slot
moved: that is how a promoted replica is found after its master died. While no node
owns the slot (the failover is under way, ``-CLUSTERDOWN``), calls raise
``RedisUnavailable`` and the limiter's failure mode applies.

Every script call touches the two keys of one principal and model, which share a hash
tag (``redis_backend``), so each call lives in one slot.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from nexus.config import RedisTarget
from nexus.limits.resp import Endpoint, RedisReplyError, RedisUnavailable, RespClient, encode

SLOTS = 16384
MAX_REDIRECTIONS = 5
log = logging.getLogger("nexus.limits")

Address = tuple[str, int]


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
        table.append(crc)
    return tuple(table)


_CRC16 = _crc16_table()


def key_slot(key: str) -> int:
    """The hash slot of ``key``: CRC16/XMODEM of its ``{tag}`` if it has a non-empty one,
    else of the whole key, modulo 16384 (``src/cluster.h`` keyHashSlot)."""
    data = key.encode()
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc & (SLOTS - 1)


def _address(where: str) -> Address:
    host, _, port = where.rpartition(":")
    return host, int(port)


class ClusterClient:
    """One pipelined ``RespClient`` per master, chosen by the slot of the call's key."""

    def __init__(self, target: RedisTarget, *, tls: ssl.SSLContext | None = None) -> None:
        self._target = target
        self._tls = tls  # every node's, with rediss+cluster:// (``RespClient``)
        self._slots: list[Address | None] = [None] * SLOTS
        self._nodes: dict[Address, RespClient] = {}
        self._refreshing: asyncio.Lock | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._epoch = 0  # counts completed refreshes

    async def call(self, *args: str | int | bytes, key: str | None = None) -> Any:
        return await self.call_encoded(encode(*args), key=key)

    async def call_encoded(self, command: bytes, *, key: str | None = None) -> Any:
        slot = key_slot(key) if key is not None else 0
        address = self._slots[slot]
        if address is None:
            await self.refresh()
            address = self._owner(slot)
        asking = False
        for _ in range(MAX_REDIRECTIONS):
            node = self._node(address)
            try:
                if asking:
                    return await node.call_asking(command)
                return await node.call_encoded(command)
            except RedisReplyError as exc:
                kind, _, rest = str(exc).partition(" ")
                if kind == "MOVED":
                    moved_slot, where = rest.split()
                    address = self._slots[int(moved_slot)] = _address(where)
                    self._refresh_soon()
                    asking = False
                elif kind == "ASK":
                    address, asking = _address(rest.split()[1]), True
                elif kind in ("CLUSTERDOWN", "TRYAGAIN"):
                    self._refresh_soon()
                    raise RedisUnavailable(
                        f"Redis Cluster cannot serve slot {slot}: {exc}"
                    ) from exc
                else:
                    raise
            except RedisUnavailable:
                # The node is gone: a replica may own its slots by now.
                epoch = self._epoch
                await self.refresh(avoid=address)
                moved = self._slots[slot]
                if self._epoch == epoch or moved is None or moved == address:
                    raise
                address, asking = moved, False
        raise RedisUnavailable(f"more than {MAX_REDIRECTIONS} redirections for slot {slot}")

    def _owner(self, slot: int) -> Address:
        address = self._slots[slot]
        if address is None:
            raise RedisUnavailable(f"no Redis Cluster node serves slot {slot}")
        return address

    def _node(self, address: Address) -> RespClient:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = RespClient(
                Endpoint.of(self._target, *address), tls=self._tls
            )
        return node

    def _refresh_soon(self) -> None:
        if self._refreshing is not None and self._refreshing.locked():
            return
        task = asyncio.get_running_loop().create_task(self._refresh_quietly())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_quietly(self) -> None:
        try:
            await self.refresh()
        except RedisUnavailable:
            return  # the next failing call asks again

    async def refresh(self, *, avoid: Address | None = None) -> None:
        """Read the slot map from the first node that answers: known masters, then seeds."""
        if self._refreshing is None:
            self._refreshing = asyncio.Lock()
        epoch = self._epoch
        async with self._refreshing:
            if self._epoch != epoch:
                return  # someone refreshed while this call waited
            candidates = list(dict.fromkeys([*self._nodes, *self._target.nodes]))
            candidates.sort(key=lambda a: a == avoid)  # the failing node last
            errors = []
            for address in candidates:
                try:
                    ranges = await self._node(address).call("CLUSTER", "SLOTS")
                except (RedisUnavailable, RedisReplyError) as exc:
                    errors.append(f"{address[0]}:{address[1]}: {exc}")
                    continue
                self._apply(ranges, address)
                return
            raise RedisUnavailable(
                "no Redis Cluster node answered CLUSTER SLOTS: " + "; ".join(errors)
            )

    def _apply(self, ranges: list[Any], asked: Address) -> None:
        slots: list[Address | None] = [None] * SLOTS
        for entry in ranges:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            host = master[0].decode() if master[0] not in (None, b"", b"?") else asked[0]
            address = (host, int(master[1]))
            slots[start : end + 1] = [address] * (end - start + 1)
        if slots != self._slots:
            log.info("Redis Cluster slot map now has %d masters", len(set(slots) - {None}))
        self._slots = slots
        self._epoch += 1
        for address in set(self._nodes) - set(slots) - set(self._target.nodes):
            node = self._nodes.pop(address)
            task = asyncio.get_running_loop().create_task(node.close())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for node in self._nodes.values():
            await node.close()
        self._nodes.clear()
