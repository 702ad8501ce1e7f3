"""The limiter on a real Redis Cluster (3 masters, 3 replicas): slots, MOVED, ASK, failover."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_sync

from nexus.limits import Quota, RedisWindow
from nexus.limits.cluster import key_slot
from nexus.limits.resp import RedisUnavailable
from tests.limits.ha import Cluster, redis_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def _node_id(port: int) -> str:
    return str(redis_sync.Redis(port=port).execute_command("CLUSTER", "MYID").decode())


def test_key_slots_are_the_servers(cluster: Cluster) -> None:
    client = redis_sync.Redis(port=cluster.nodes[0].port)
    keys = [f"nexus:rl:{{user-{i}:chat}}:req" for i in range(200)] + ["plain", "{}x", "a{b"]
    assert [key_slot(k) for k in keys] == [
        client.execute_command("CLUSTER", "KEYSLOT", k) for k in keys
    ]


async def test_ten_keys_over_three_masters_each_admit_exactly_the_limit(cluster: Cluster) -> None:
    window = RedisWindow.from_url(cluster.url)
    quota = Quota(requests_per_minute=20, tokens_per_minute=0)
    candidates = [f"ten-{i}:chat" for i in range(200)]
    thirds = [[k for k in candidates if key_slot(f"{{{k}}}") * 3 // 16384 == i] for i in range(3)]
    keys = thirds[0][:4] + thirds[1][:3] + thirds[2][:3]
    decisions = await asyncio.gather(
        *(window.acquire(k, quota, 0) for k in keys for _ in range(40))
    )
    await window.close()
    assert sum(d.allowed for d in decisions) == 10 * 20
    owners = {cluster.master_of(f"nexus:rl:{{{k}}}:req").port for k in keys}
    assert len(owners) == 3  # the keys really live on all three masters


async def test_a_moved_slot_is_followed(cluster: Cluster) -> None:
    window = RedisWindow.from_url(cluster.url)
    quota = Quota(requests_per_minute=3, tokens_per_minute=0)
    key = "moved:chat"
    assert (await window.acquire(key, quota, 0)).allowed  # the client now maps the slot
    slot = key_slot(f"nexus:rl:{{{key}}}:req")
    source = cluster.master_of(f"nexus:rl:{{{key}}}:req")
    for k in redis_sync.Redis(port=source.port).keys("nexus:rl:{moved:chat}*"):
        redis_sync.Redis(port=source.port).delete(k)  # an empty slot moves by SETSLOT alone
    target = next(n for n in cluster.masters() if n.port != source.port)
    src, dst = redis_sync.Redis(port=source.port), redis_sync.Redis(port=target.port)
    # The documented order (CLUSTER SETSLOT): importing, migrating, then NODE on the target
    # first, which bumps its config epoch so gossip does not move the slot back.
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source.port))
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target.port))
    for node in [target, source, *cluster.masters()]:
        redis_sync.Redis(port=node.port).execute_command(
            "CLUSTER", "SETSLOT", slot, "NODE", _node_id(target.port)
        )
    decisions = [await window.acquire(key, quota, 0) for _ in range(5)]
    await window.close()
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    assert redis_sync.Redis(port=target.port).hget("nexus:rl:{moved:chat}:req", "n") == b"3"


async def test_an_ask_redirection_is_followed(cluster: Cluster) -> None:
    key = "asked:chat"
    slot = key_slot(f"nexus:rl:{{{key}}}:req")
    source = cluster.master_of(f"nexus:rl:{{{key}}}:req")
    target = next(n for n in cluster.masters() if n.port != source.port)
    src, dst = redis_sync.Redis(port=source.port), redis_sync.Redis(port=target.port)
    window = RedisWindow.from_url(cluster.url)
    quota = Quota(3, 1000)
    first = await window.acquire(key, quota, 10)  # both hashes now exist on the source
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source.port))
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target.port))
    src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS",
                        "nexus:rl:{asked:chat}:req", "nexus:rl:{asked:chat}:tok")  # fmt: skip
    try:
        # The source no longer has the keys: -ASK to the target, which runs the script
        # behind ASKING (src/cluster.c getNodeByQuery).
        decisions = [await window.acquire(key, quota, 10) for _ in range(3)]
    finally:
        await window.close()
        for node in (dst, src):  # the migration completes: the slot is the target's
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", _node_id(target.port))
    assert first.allowed
    assert [d.allowed for d in decisions] == [True, True, False]
    assert dst.hget("nexus:rl:{asked:chat}:req", "n") == b"3"
    assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0


async def test_a_killed_master_is_replaced_by_its_promoted_replica(
    cluster: Cluster, tmp_path: Path
) -> None:
    window = RedisWindow.from_url(cluster.url)
    quota = Quota(requests_per_minute=20, tokens_per_minute=0)
    key = "failover:chat"
    assert (await window.acquire(key, quota, 0)).allowed
    master = cluster.master_of(f"nexus:rl:{{{key}}}:req")
    promoted = await asyncio.to_thread(cluster.kill, master)
    fresh = "after-failover:chat"
    while cluster.master_of(f"nexus:rl:{{{fresh}}}:req").port != promoted.port:
        fresh = "x" + fresh  # a fresh key on the promoted replica's slots
    decisions = []
    for _ in range(40):
        try:
            decisions.append(await window.acquire(fresh, quota, 0))
        except RedisUnavailable:
            await asyncio.sleep(0.1)  # at most one call finds the dead node, then the map moves
    await window.close()
    assert len(decisions) >= 39
    assert sum(d.allowed for d in decisions) == 20
