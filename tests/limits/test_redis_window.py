"""The Redis limiter backend against a real redis-server: atomic, exact, constant state per
key, self-cleaning, and refused whole (never half applied) when Redis is out of memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis as redis_sync

from nexus.limits import Quota, RedisWindow
from nexus.limits.connect import connect
from nexus.limits.resp import RedisReplyError
from tests.support.servers import Redis, redis_server


async def test_concurrent_acquires_admit_exactly_the_limit(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    quota = Quota(requests_per_minute=25, tokens_per_minute=0)
    decisions = await asyncio.gather(*(window.acquire("p:chat", quota, 0) for i in range(100)))
    await window.close()
    assert sum(d.allowed for d in decisions) == 25
    refused = [d for d in decisions if not d.allowed]
    assert all(d.reason == "requests" for d in refused)
    assert all(0 < (d.retry_after or 0) <= 61 for d in refused)


async def test_tokens_are_reserved_then_settled(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    quota = Quota(requests_per_minute=0, tokens_per_minute=1000)
    first = await window.acquire("p:chat", quota, 700)
    assert first.allowed
    assert first.tokens_remaining == 300
    assert not (await window.acquire("p:chat", quota, 700)).allowed
    await window.settle("p:chat", first.second, 700, 120)
    second = await window.acquire("p:chat", quota, 700)
    await window.close()
    assert second.allowed
    assert second.tokens_remaining == 1000 - 120 - 700


async def test_request_bigger_than_the_budget_waits_a_whole_window(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    decision = await window.acquire("p:chat", Quota(0, 100), 500)
    await window.close()
    assert not decision.allowed
    assert decision.reason == "tokens"
    assert decision.retry_after == 60


async def test_keys_expire_with_the_window(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    await window.acquire("p:chat", Quota(10, 1000), 50)
    await window.close()
    client = redis_sync.Redis(port=redis.port)
    keys = client.keys("nexus:rl:*")
    assert len(keys) == 2
    # Each hash goes when its newest bucket leaves the window: 60 to 61 s after the call.
    assert all(59_000 < client.pttl(k) <= 61_000 for k in keys)


async def test_settlements_ride_on_the_next_acquire_or_flush_by_themselves(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url, settle_delay=0.05)
    quota = Quota(requests_per_minute=0, tokens_per_minute=1000)
    a1 = await window.acquire("a:chat", quota, 500)
    await window.settle("a:chat", a1.second, 500, 50)
    folded = await window.acquire("a:chat", quota, 100)  # carries the settlement
    assert folded.tokens_remaining == 1000 - 50 - 100
    b1 = await window.acquire("b:chat", quota, 500)
    await window.settle("b:chat", b1.second, 500, 20)
    client = redis_sync.Redis(port=redis.port)
    tokens_key = "nexus:rl:{b:chat}:tok"
    deadline = asyncio.get_running_loop().time() + 5
    while int(client.hget(tokens_key, "n") or 0) != 20:
        assert asyncio.get_running_loop().time() < deadline, "the delayed flush never came"
        await asyncio.sleep(0.02)
    await window.close()


async def test_steady_traffic_settles_without_calls_of_its_own(redis: Redis) -> None:
    """Each acquire carries the previous settlement; the flush timer must not add a Redis
    call per request (it used to: one timer per settle, each finding a newer one queued)."""
    window = RedisWindow.from_url(redis.url, settle_delay=0.1)
    quota = Quota(requests_per_minute=0, tokens_per_minute=1_000_000)
    client = redis_sync.Redis(port=redis.port)
    await window.acquire("warm:chat", quota, 0)  # loads the script (NOSCRIPT once)
    client.config_resetstat()
    for _ in range(20):
        decision = await window.acquire("s:chat", quota, 100)
        await window.settle("s:chat", decision.second, 100, 10)
        await asyncio.sleep(0.03)
    evalsha = client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    await window.close()  # flushes the last settlement
    assert evalsha == 20
    assert int(client.hget("nexus:rl:{s:chat}:tok", "n") or 0) == 20 * 10


async def test_a_fallback_step_is_charged_tokens_but_not_counted(redis: Redis) -> None:
    window = RedisWindow.from_url(redis.url)
    counted = Quota(requests_per_minute=2, tokens_per_minute=100)
    fallback = Quota(requests_per_minute=2, tokens_per_minute=100, count_request=False)
    assert (await window.acquire("f:chat", counted, 10)).allowed
    assert (await window.acquire("f:chat", counted, 10)).allowed
    step = await window.acquire("f:chat", fallback, 10)
    over = await window.acquire("f:chat", fallback, 80)
    full = await window.acquire("f:chat", counted, 1)
    await window.close()
    assert step.allowed
    assert (step.tokens_remaining, step.requests_remaining) == (70, 0)
    assert not over.allowed
    assert over.reason == "tokens"
    assert not full.allowed
    assert full.reason == "requests"


async def test_100_000_admissions_on_one_key_grow_used_memory_by_at_most_1_mib(
    redis: Redis,
) -> None:
    """Constant state per key: the sliding logs this replaces held one entry per admission."""
    client = redis_sync.Redis(port=redis.port)
    window = RedisWindow.from_url(redis.url, settle_delay=0.05)
    quota = Quota(requests_per_minute=10**9, tokens_per_minute=10**12)
    await window.acquire("warm:chat", quota, 0)  # the script's own memory is not the key's
    before = client.info("memory")["used_memory"]
    # 200 calls in flight at a time: each must answer within the client's 0.5 s command
    # timeout (resp.COMMAND_TIMEOUT_SECONDS), which 1,000 at once missed on a loaded CI machine.
    for _ in range(500):
        decisions = await asyncio.gather(
            *(window.acquire("hot:chat", quota, 50) for _ in range(200))
        )
        for decision in decisions[::10]:
            await window.settle("hot:chat", decision.second, 50, 20)
    await window.flush_all()
    # Measured with the window's connection closed: a connection's query and reply buffers
    # (1,000 calls in flight) count in used_memory until Redis trims them, and are not state.
    await window.close()
    grown = client.info("memory")["used_memory"] - before
    assert int(client.hget("nexus:rl:{hot:chat}:req", "n") or 0) == 100_000
    assert grown <= 1024 * 1024, grown
    assert client.hlen("nexus:rl:{hot:chat}:req") <= 63  # 61 buckets at most, 'n' and 'lo'


async def test_the_counted_requests_never_exceed_the_limit_in_any_window(redis: Redis) -> None:
    """The stated precision, on Redis' own clock, with a 2 s window to keep the test short:
    no 2 s hold more admissions than the limit; a refusal means the last 3 s hold it."""
    client = redis_sync.Redis(port=redis.port)
    window = RedisWindow(connect(redis.url), window=2)
    quota = Quota(requests_per_minute=5, tokens_per_minute=0)

    def server_ms() -> float:
        seconds, micros = client.time()
        return seconds * 1000 + micros / 1000

    admitted: list[tuple[float, float]] = []  # server time before and after the call
    refused = 0
    for i in range(160):
        before = server_ms()
        decision = await window.acquire("w:chat", quota, 0)
        after = server_ms()
        if decision.allowed:
            # Admissions surely inside (after - 2 s, before]: fewer than the limit.
            assert sum(b > after - 2000 for b, _ in admitted) < 5
            admitted.append((before, after))
        else:
            refused += 1
            # Admissions possibly inside the last 3 s: at least the limit.
            assert sum(a > before - 3000 for _, a in admitted) >= 5
        await asyncio.sleep(0.025 if i % 40 < 30 else 0.1)
    await window.close()
    assert refused > 20
    assert len(admitted) > 10


async def test_out_of_memory_refuses_the_whole_script(tmp_path: Path) -> None:
    """Under ``noeviction`` a full Redis answers ``-OOM`` before the script runs (its shebang
    has no ``allow-oom``): the limiter's failure mode applies; no window is half written
    and none is evicted."""
    with redis_server(tmp_path / "oom", extra_args=("--maxmemory-policy", "noeviction")) as server:
        client = redis_sync.Redis(port=server.port)
        window = RedisWindow.from_url(server.url)
        quota = Quota(requests_per_minute=10, tokens_per_minute=1000)
        kept = await window.acquire("kept:chat", quota, 10)
        client.config_set("maxmemory", client.info("memory")["used_memory"])
        with pytest.raises(RedisReplyError, match="OOM"):
            await window.acquire("new:chat", quota, 10)
        client.config_set("maxmemory", 0)
        again = await window.acquire("kept:chat", quota, 10)
        await window.close()
        assert client.keys("nexus:rl:{new:chat}*") == []
    assert kept.allowed
    assert again.requests_remaining == 8  # the kept window was not evicted
