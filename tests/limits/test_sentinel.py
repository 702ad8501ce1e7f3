"""The limiter behind real Sentinels (a master, a replica, three sentinels): discovery,
a master failover, and a demoted master's ``-READONLY``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from nexus.limits import Quota, RedisWindow
from nexus.limits.connect import connect
from nexus.limits.resp import RedisUnavailable
from nexus.limits.sentinel import SentinelClient
from tests.limits.ha import SentinelGroup, redis_sentinels


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    with redis_sentinels(tmp_path) as running:
        yield running


async def test_the_master_is_asked_of_the_sentinels(group: SentinelGroup) -> None:
    url = group.url.replace("127.0.0.1:", "127.0.0.1:1,127.0.0.1:", 1)  # a dead sentinel first
    window = RedisWindow.from_url(url)
    decisions = await asyncio.gather(
        *(window.acquire("s:chat", Quota(20, 0), 0) for _ in range(40))
    )
    await window.close()
    assert sum(d.allowed for d in decisions) == 20
    assert redis_sync.Redis(port=group.master.port).hget("nexus:rl:{s:chat}:req", "n") == b"20"


async def test_a_failover_is_followed_without_a_restart(group: SentinelGroup) -> None:
    window = RedisWindow.from_url(group.url)
    quota = Quota(requests_per_minute=20, tokens_per_minute=0)
    assert (await window.acquire("before:chat", quota, 0)).allowed
    await asyncio.to_thread(group.kill_master)
    decisions, unavailable = [], 0
    for _ in range(60):
        try:
            decisions.append(await window.acquire("after:chat", quota, 0))
        except RedisUnavailable:
            unavailable += 1
            await asyncio.sleep(0.1)
        if len(decisions) == 40:
            break
    await window.close()
    assert unavailable <= 1  # the call that found the old master gone
    assert sum(d.allowed for d in decisions) == 20
    assert redis_sync.Redis(port=group.replica.port).hget("nexus:rl:{after:chat}:req", "n") == b"20"


async def test_a_readonly_reply_asks_the_sentinels_again(group: SentinelGroup) -> None:
    """A master demoted while its connection stays up answers -READONLY: the client asks
    the sentinels again and retries the call on the master they name. (A Sentinel failover
    also kills the demoted master's clients, so this swaps the roles by hand.)"""
    client = connect(group.url)
    assert isinstance(client, SentinelClient)
    assert await client.call("SET", "k", "1", key="k") == b"OK"
    old, new = redis_sync.Redis(port=group.master.port), redis_sync.Redis(port=group.replica.port)
    new.execute_command("REPLICAOF", "NO", "ONE")
    old.execute_command("REPLICAOF", "127.0.0.1", group.replica.port)
    for port in group.sentinel_ports:
        sentinel = redis_sync.Redis(port=port)
        sentinel.execute_command("SENTINEL", "REMOVE", "nexus")
        sentinel.execute_command("SENTINEL", "MONITOR", "nexus", "127.0.0.1", group.replica.port, 2)
    with pytest.raises(redis_sync.ReadOnlyError):
        old.set("k", "x")  # what the client's open connection now hears
    assert await client.call("SET", "k", "2", key="k") == b"OK"  # no error reached the caller
    await client.close()
    assert new.get("k") == b"2"
