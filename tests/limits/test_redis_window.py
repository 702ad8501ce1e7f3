"""The Redis limiter backend against a real redis-server: atomic, exact, self-cleaning."""

from __future__ import annotations

import asyncio

import redis as redis_sync

from nexus.limits import Quota, RedisWindow
from tests.support.servers import Redis


async def test_concurrent_acquires_admit_exactly_the_limit(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    quota = Quota(requests_per_minute=25, tokens_per_minute=0)
    decisions = await asyncio.gather(
        *(window.acquire("p:chat", quota, 0, f"m{i}") for i in range(100))
    )
    await window.close()
    assert sum(d.allowed for d in decisions) == 25
    refused = [d for d in decisions if not d.allowed]
    assert all(d.reason == "requests" for d in refused)
    assert all(0 < (d.retry_after or 0) <= 60 for d in refused)


async def test_tokens_are_reserved_then_settled(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    quota = Quota(requests_per_minute=0, tokens_per_minute=1000)
    first = await window.acquire("p:chat", quota, 700, "a")
    assert first.allowed
    assert first.tokens_remaining == 300
    assert not (await window.acquire("p:chat", quota, 700, "b")).allowed
    await window.settle("p:chat", "a", 700, 120)
    second = await window.acquire("p:chat", quota, 700, "c")
    await window.close()
    assert second.allowed
    assert second.tokens_remaining == 1000 - 120 - 700


async def test_request_bigger_than_the_budget_waits_a_whole_window(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    decision = await window.acquire("p:chat", Quota(0, 100), 500, "a")
    await window.close()
    assert not decision.allowed
    assert decision.reason == "tokens"
    assert decision.retry_after == 60


async def test_keys_expire_with_the_window(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    await window.acquire("p:chat", Quota(10, 1000), 50, "a")
    await window.close()
    client = redis_sync.Redis(port=redis.port)
    keys = client.keys("nexus:rl:*")
    assert len(keys) == 3
    assert all(0 < client.pttl(k) <= 60_000 for k in keys)


async def test_settlements_ride_on_the_next_acquire_or_flush_by_themselves(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url, settle_delay=0.05)
    quota = Quota(requests_per_minute=0, tokens_per_minute=1000)
    await window.acquire("a:chat", quota, 500, "a1")
    await window.settle("a:chat", "a1", 500, 50)
    folded = await window.acquire("a:chat", quota, 100, "a2")  # carries the settlement
    assert folded.tokens_remaining == 1000 - 50 - 100
    await window.acquire("b:chat", quota, 500, "b1")
    await window.settle("b:chat", "b1", 500, 20)
    client = redis_sync.Redis(port=redis.port)
    total_key = "nexus:rl:{b:chat}:toktotal"
    deadline = asyncio.get_running_loop().time() + 5
    while int(client.get(total_key) or 0) != 20:
        assert asyncio.get_running_loop().time() < deadline, "the delayed flush never came"
        await asyncio.sleep(0.02)
    await window.close()


async def test_steady_traffic_settles_without_calls_of_its_own(redis: Redis) -> None:
    """Each acquire carries the previous settlement; the flush timer must not add a Redis
    call per request (it used to: one timer per settle, each finding a newer one queued)."""
    window = RedisWindow.from_url(redis.url, settle_delay=0.1)
    quota = Quota(requests_per_minute=0, tokens_per_minute=1_000_000)
    client = redis_sync.Redis(port=redis.port)
    await window.acquire("warm:chat", quota, 0, "w")  # loads the script (NOSCRIPT once)
    client.config_resetstat()
    for i in range(20):
        await window.acquire("s:chat", quota, 100, f"m{i}")
        await window.settle("s:chat", f"m{i}", 100, 10)
        await asyncio.sleep(0.03)
    evalsha = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    await window.close()  # flushes the last settlement
    assert evalsha == 20
    assert int(client.get("nexus:rl:{s:chat}:toktotal") or 0) == 20 * 10


async def test_a_burst_a_minute_old_is_drained_a_bounded_amount_per_call(redis: Redis) -> None:
    """After a burst, each call drains at most 256 expired entries per log (it used to drain
    all of them, about 10 ms a call after 7,600 admissions a second). The request count stays
    exact; tokens still waiting count until drained: stricter for a few calls, never looser."""
    client = redis_sync.Redis(port=redis.port)
    seconds, micros = client.time()
    old = seconds * 1000 + micros // 1000 - 61_000
    base = "nexus:rl:{p:chat}"
    client.zadd(f"{base}:req", {f"old{i}": old for i in range(1000)})
    client.zadd(f"{base}:tok", {f"old{i}|10": old for i in range(1000)})
    client.set(f"{base}:toktotal", 10_000)
    window = RedisWindow.from_url(redis.url)
    quota = Quota(requests_per_minute=5, tokens_per_minute=100_000)
    decisions = [await window.acquire("p:chat", quota, 10, f"new{i}") for i in range(4)]
    await window.close()
    assert [d.requests_remaining for d in decisions] == [4, 3, 2, 1]
    waiting = [1000 - 256, 1000 - 512, 1000 - 768, 0]
    assert [d.tokens_remaining for d in decisions] == [
        100_000 - 10 * (left + i + 1) for i, left in enumerate(waiting)
    ]
    assert client.zcard(f"{base}:req") == 4
    assert client.zcard(f"{base}:tok") == 4


async def test_a_settlement_keeps_the_windows_deadlines(redis: Redis) -> None:
    """A delayed settlement (``settle.lua``) must not give the token total a later expiry
    than its log's (the total would keep tokens no call subtracts any more), nor leave the
    log without one when it re-adds the log's only member."""
    window = RedisWindow.from_url(redis.url)
    await window.acquire("t:chat", Quota(0, 1000), 500, "a")
    await window.settle("t:chat", "a", 500, 100)
    await asyncio.sleep(0.2)
    await window.flush("t:chat")
    await window.close()
    client = redis_sync.Redis(port=redis.port)
    log_ttl = client.pttl("nexus:rl:{t:chat}:tok")
    total_ttl = client.pttl("nexus:rl:{t:chat}:toktotal")
    assert int(client.get("nexus:rl:{t:chat}:toktotal") or 0) == 100
    assert 0 < log_ttl <= 60_000 - 150
    assert 0 < total_ttl <= log_ttl + 5


async def test_tokens_waiting_to_be_drained_never_refuse_a_call(redis: Redis) -> None:
    """A call that fits only once every expired reservation is gone drains them all first."""
    client = redis_sync.Redis(port=redis.port)
    seconds, micros = client.time()
    old = seconds * 1000 + micros // 1000 - 61_000
    base = "nexus:rl:{q:chat}"
    client.zadd(f"{base}:tok", {f"old{i}|10": old for i in range(1000)})
    client.set(f"{base}:toktotal", 10_000)
    window = RedisWindow.from_url(redis.url)
    decision = await window.acquire("q:chat", Quota(0, 10_000), 5_000, "new")
    await window.close()
    assert decision.allowed
    assert decision.tokens_remaining == 5_000
    assert client.zcard(f"{base}:tok") == 1
