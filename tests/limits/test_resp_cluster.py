"""What ``nexus.limits.resp`` says about Redis Cluster holds: redirections are not followed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nexus.limits.resp import Endpoint, RedisReplyError, RespClient
from tests.support.processes import free_port
from tests.support.servers import redis_server


def _cluster_args(bus: int) -> tuple[str, ...]:
    return ("--cluster-enabled", "yes", "--cluster-port", str(bus),
            "--cluster-config-file", "nodes.conf")  # fmt: skip


async def test_a_moved_reply_is_an_error_not_a_redirection(tmp_path: Path) -> None:
    # Two real cluster nodes, half the slots each; a key of node B's half asked of node A.
    bus_a, bus_b = free_port(), free_port()
    with (
        redis_server(tmp_path / "a", extra_args=_cluster_args(bus_a)) as a,
        redis_server(tmp_path / "b", extra_args=_cluster_args(bus_b)) as b,
    ):
        node_a, node_b = RespClient(Endpoint.from_url(a.url)), RespClient(Endpoint.from_url(b.url))
        try:
            await node_a.call("CLUSTER", "ADDSLOTSRANGE", 0, 8191)
            await node_b.call("CLUSTER", "ADDSLOTSRANGE", 8192, 16383)
            await node_a.call("CLUSTER", "MEET", "127.0.0.1", b.port, bus_b)
            keys = [f"nexus:rl:{{k{i}}}:req" for i in range(50)]
            slots = [await node_a.call("CLUSTER", "KEYSLOT", key) for key in keys]
            key = next(k for k, slot in zip(keys, slots, strict=True) if slot >= 8192)
            reply = ""
            deadline = time.monotonic() + 20
            while not reply.startswith("MOVED") and time.monotonic() < deadline:
                try:
                    await node_a.call("SET", key, "1")
                except RedisReplyError as exc:  # CLUSTERDOWN until the nodes have gossiped
                    reply = str(exc)
                await asyncio.sleep(0.05)
            assert reply.startswith(f"MOVED {slots[keys.index(key)]} 127.0.0.1:{b.port}")
            assert await node_b.call("GET", key) is None  # the write never reached node B
        finally:
            await node_a.close()
            await node_b.close()
