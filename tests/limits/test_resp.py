"""The limiter's Redis client against real redis-servers: pipelining, auth, failures."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest
import uvloop

from nexus.config import parse_redis_url
from nexus.limits.resp import (
    Endpoint,
    RedisReplyError,
    RedisUnavailable,
    RespClient,
    Script,
    encode,
)
from tests.support.processes import free_port
from tests.support.servers import Redis, redis_server


def test_url_parsing() -> None:
    assert Endpoint.from_url("redis://127.0.0.1:6400/2") == Endpoint(
        "127.0.0.1", 6400, 2, None, None, tls=False
    )
    secure = Endpoint.from_url("rediss://app:p%40ss@redis.nexus.svc:6380")
    assert (secure.username, secure.password, secure.tls, secure.db) == ("app", "p@ss", True, 0)
    with pytest.raises(ValueError, match="unsupported Redis URL scheme"):
        Endpoint.from_url("http://localhost")


def test_cluster_and_sentinel_urls() -> None:
    cluster = parse_redis_url("rediss+cluster://:pw@10.0.0.1:7000,node-b,[::1]:7002")
    assert (cluster.kind, cluster.tls, cluster.password) == ("cluster", True, "pw")
    assert cluster.nodes == (("10.0.0.1", 7000), ("node-b", 6379), ("::1", 7002))
    sentinel = parse_redis_url("redis+sentinel://s1,s2:26380/nexus-limits/2")
    assert sentinel.nodes == (("s1", 26379), ("s2", 26380))
    assert (sentinel.kind, sentinel.master, sentinel.db) == ("sentinel", "nexus-limits", 2)
    for bad, message in [
        ("redis+sentinel://s1:26379", "names its master"),
        ("redis+sentinel://s1:26379/m/x", "must be a number"),
        ("redis+cluster://a:1/3", "only database 0"),
        ("redis://a:1,b:2", "takes one host"),
        ("redis+cluster://a:1,:2", "names no host"),
        ("redis+cluster://a:99999", "invalid port"),
        ("valkey://a:1", "unsupported Redis URL scheme"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_redis_url(bad)
    with pytest.raises(ValueError, match="names several nodes"):
        Endpoint.from_url("redis+cluster://a:1")


def test_encoding_is_resp_bulk_strings() -> None:
    assert encode("SET", "k", 10) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n10\r\n"


def test_pipelined_calls_under_uvloop_keep_their_replies_apart(redis: Redis) -> None:
    """The transformer runs on uvloop: concurrent callers must each get their own reply."""

    async def run() -> list[object]:
        client = RespClient(Endpoint.from_url(redis.url))
        replies = await asyncio.gather(*(client.call("ECHO", f"m{i}") for i in range(500)))
        await client.close()
        return list(replies)

    assert uvloop.run(run()) == [f"m{i}".encode() for i in range(500)]


async def test_scripts_reload_after_the_cache_is_flushed(redis: Redis) -> None:
    client = RespClient(Endpoint.from_url(redis.url))
    script = Script(client, "return ARGV[1] .. KEYS[1]")
    assert await script(["k"], ["v"]) == b"vk"
    await client.call("SCRIPT", "FLUSH")
    assert await script(["k"], ["w"]) == b"wk"
    with pytest.raises(RedisReplyError, match="unknown command"):
        await client.call("NOT-A-COMMAND")
    await client.close()


async def test_script_heads_are_cached_per_key_set_and_bounded(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key set gets its own encoded head (right keys, right count), and the cache is
    dropped whole once it passes its bound: JWT subjects make key sets open-ended."""
    monkeypatch.setattr(Script, "MAX_CACHED_KEY_SETS", 3)
    client = RespClient(Endpoint.from_url(redis.url))
    script = Script(client, "return {#KEYS, KEYS[#KEYS], ARGV[1]}")
    for i in range(10):
        keys = [f"k{i}"] * (1 + i % 3)
        assert await script(keys, [i]) == [len(keys), f"k{i}".encode(), str(i).encode()]
        assert len(script._heads) <= 3
    await client.close()


async def test_password_and_database_are_applied(tmp_path: Path) -> None:
    with redis_server(tmp_path, extra_args=("--requirepass", "s3cret")) as server:
        good = RespClient(Endpoint.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/3"))
        await good.call("SET", "where", "db3")
        assert await good.call("GET", "where") == b"db3"
        await good.close()
        wrong = RespClient(Endpoint.from_url(f"redis://:nope@127.0.0.1:{server.port}/0"))
        with pytest.raises(RedisUnavailable, match="refused AUTH"):
            await wrong.call("PING")


async def test_refused_then_recovered(tmp_path: Path) -> None:
    port = free_port()
    client = RespClient(Endpoint.from_url(f"redis://127.0.0.1:{port}/0"))
    with pytest.raises(RedisUnavailable, match="cannot connect"):
        await client.call("PING")
    with redis_server(tmp_path, port=port):
        assert await client.call("PING") == b"PONG"
    with pytest.raises(RedisUnavailable):
        await client.call("PING")
    await client.close()


async def test_a_stalled_server_times_out_and_the_client_resynchronises(redis: Redis) -> None:
    client = RespClient(Endpoint.from_url(redis.url))
    assert await client.call("PING") == b"PONG"
    os.kill(redis.process.pid, signal.SIGSTOP)  # a stuck Redis: connected, silent
    try:
        with pytest.raises(RedisUnavailable, match="did not answer in time"):
            await client.call("PING")
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
    assert await client.call("ECHO", "fresh") == b"fresh"
    await client.close()
