"""The limiter over TLS (``rediss://``) against a real redis-server serving TLS only, its
certificate signed by a throwaway private CA, as managed Redis services are set up."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from nexus.config import GatewaySettings, RedisTls, load_settings
from nexus.errors import LimiterUnavailable
from nexus.limits import InProcessWindow, Quota, RateLimiter, RedisWindow
from nexus.limits.cluster import SLOTS, key_slot
from nexus.limits.resp import RedisUnavailable
from tests.limits.ha import redis_cluster, redis_sentinels
from tests.support.certs import Authority, Issued
from tests.support.servers import Redis, redis_server

QUOTA = Quota(requests_per_minute=25, tokens_per_minute=0)


def settings(redis_url: str, **env: str) -> GatewaySettings:
    """Settings as the transformer reads them, so the CA goes through the real variable."""
    env = {"GATEWAY_API_KEYS": "k", "GATEWAY_REDIS_URL": redis_url, **env}
    return load_settings(env, model_name="chat", predictor_host="127.0.0.1:9")


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def server_cert(ca: Authority) -> Issued:
    return ca.issue("redis")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, server_cert: Issued) -> Iterator[Redis]:
    with redis_server(tmp_path_factory.mktemp("redis"), tls=server_cert, plaintext=False) as r:
        yield r


async def test_the_limiter_admits_exactly_over_tls_with_the_ca_given(
    tls_redis: Redis, server_cert: Issued
) -> None:
    s = settings(tls_redis.tls_url, GATEWAY_REDIS_CA_FILE=str(server_cert.ca_file))
    window = RedisWindow.from_url(tls_redis.tls_url, tls=s.redis_tls.context())
    try:
        decisions = await asyncio.gather(*(window.acquire("tls:chat", QUOTA, 0) for _ in range(60)))
    finally:
        await window.close()
    assert sum(d.allowed for d in decisions) == 25


@pytest.mark.parametrize("trust", ["another CA", "the system's CAs only"])
async def test_an_unknown_ca_is_refused_by_name(
    tls_redis: Redis, tmp_path: Path, trust: str
) -> None:
    if trust == "another CA":
        other = Authority(tmp_path, "someone else's CA")
        tls = settings(tls_redis.tls_url, GATEWAY_REDIS_CA_FILE=str(other.ca_file)).redis_tls
    else:
        tls = settings(tls_redis.tls_url).redis_tls
    window = RedisWindow.from_url(tls_redis.tls_url, tls=tls.context())
    with pytest.raises(RedisUnavailable, match="TLS certificate verification failed") as caught:
        await window.acquire("tls:chat", QUOTA, 0)
    await window.close()
    # OpenSSL's reason, which depends on whether Redis sends its CA along.
    assert "certificate" in str(caught.value).partition(": ")[2]
    assert "GATEWAY_REDIS_CA_FILE" in str(caught.value)


async def test_a_certificate_for_another_host_is_refused(ca: Authority, tmp_path: Path) -> None:
    elsewhere = ca.issue("elsewhere", hosts=("redis.elsewhere.example", "10.1.2.3"))
    with redis_server(tmp_path / "redis", tls=elsewhere, plaintext=False) as redis:
        window = RedisWindow.from_url(redis.tls_url, tls=RedisTls(ca.ca_file.read_text()).context())
        with pytest.raises(RedisUnavailable, match="IP address mismatch"):
            await window.acquire("tls:chat", QUOTA, 0)
        await window.close()


class Events:
    def __init__(self) -> None:
        self.degraded_now = False
        self.served = 0

    def degraded(self, active: bool) -> None:
        self.degraded_now = active

    def served_degraded(self) -> None:
        self.served += 1


async def test_a_refused_certificate_is_an_outage_the_failure_mode_covers(
    tls_redis: Redis,
) -> None:
    """No CA given: the limiter follows its failure mode rather than failing requests."""
    for mode in ("open", "closed"):
        events = Events()
        limiter = RateLimiter(
            redis=RedisWindow.from_url(tls_redis.tls_url, tls=RedisTls().context()),
            local=InProcessWindow(),
            failure_mode=mode,
            events=events,
        )
        try:
            if mode == "open":
                decision, _ = await limiter.acquire("tls:chat", QUOTA, 0)
                assert decision.allowed
                assert (events.degraded_now, events.served) == (True, 1)
            else:
                with pytest.raises(LimiterUnavailable):
                    await limiter.acquire("tls:chat", QUOTA, 0)
                assert events.degraded_now
        finally:
            await limiter.close()


async def test_auth_over_tls(tmp_path: Path, server_cert: Issued) -> None:
    with redis_server(
        tmp_path / "redis", tls=server_cert, plaintext=False,
        extra_args=("--requirepass", "fake-test-password"),
    ) as redis:  # fmt: skip
        good = f"rediss://:fake-test-password@127.0.0.1:{redis.tls_port}/0"
        s = settings(good, GATEWAY_REDIS_CA_FILE=str(server_cert.ca_file))
        window = RedisWindow.from_url(good, tls=s.redis_tls.context())
        assert (await window.acquire("tls:chat", QUOTA, 0)).allowed
        await window.close()
        bad = RedisWindow.from_url(
            good.replace("fake-test-password", "wrong"), tls=s.redis_tls.context()
        )
        with pytest.raises(RedisUnavailable, match="Redis refused AUTH"):
            await bad.acquire("tls:chat", QUOTA, 0)
        await bad.close()


async def test_a_client_certificate_for_redis_that_asks_for_one(
    tmp_path: Path, ca: Authority, server_cert: Issued
) -> None:
    client = ca.issue("nexus-transformer")
    with redis_server(
        tmp_path / "redis", tls=server_cert, plaintext=False,
        extra_args=("--tls-auth-clients", "yes"),
    ) as redis:  # fmt: skip
        s = settings(
            redis.tls_url,
            GATEWAY_REDIS_CA_FILE=str(ca.ca_file),
            GATEWAY_REDIS_CLIENT_CERT_FILE=str(client.cert_file),
            GATEWAY_REDIS_CLIENT_KEY_FILE=str(client.key_file),
        )
        window = RedisWindow.from_url(redis.tls_url, tls=s.redis_tls.context())
        assert (await window.acquire("tls:chat", QUOTA, 0)).allowed
        await window.close()
        # Without one, Redis drops the connection (TLS 1.3: after the client's handshake).
        anonymous = RedisTls(ca_pem=ca.ca_file.read_text())
        window = RedisWindow.from_url(redis.tls_url, tls=anonymous.context())
        with pytest.raises(RedisUnavailable):
            await window.acquire("tls:chat", QUOTA, 0)
        await window.close()


async def test_a_cluster_over_tls(tmp_path: Path, ca: Authority, server_cert: Issued) -> None:
    """Seeds, the slot map's nodes and every data call over TLS, verified by the CA."""
    with redis_cluster(tmp_path, tls=server_cert) as cluster:
        tls = RedisTls(ca_pem=ca.ca_file.read_text()).context()
        window = RedisWindow.from_url(cluster.tls_url, tls=tls)
        candidates = [f"cluster-{i}:chat" for i in range(200)]
        # Four keys in each third of the slots: one per master of a fresh cluster.
        thirds = [[k for k in candidates if key_slot(f"{{{k}}}") * 3 // SLOTS == third]
                  for third in range(3)]  # fmt: skip
        keys = [k for third in thirds for k in third[:4]]
        try:
            decisions = await asyncio.gather(
                *(window.acquire(k, QUOTA, 0) for k in keys for _ in range(30))
            )
        finally:
            await window.close()
        assert sum(d.allowed for d in decisions) == 12 * 25
        assert len({cluster.master_of(f"nexus:rl:{{{k}}}:req").port for k in keys}) == 3
        untrusted = RedisWindow.from_url(cluster.tls_url, tls=RedisTls().context())
        with pytest.raises(RedisUnavailable, match="TLS certificate verification failed"):
            await untrusted.acquire("cluster-0:chat", QUOTA, 0)
        await untrusted.close()


async def test_sentinels_and_master_over_tls(
    tmp_path: Path, ca: Authority, server_cert: Issued
) -> None:
    """``rediss+sentinel://``: the sentinels are asked over TLS too, with the same CA."""
    with redis_sentinels(tmp_path, tls=server_cert) as group:
        tls = RedisTls(ca_pem=ca.ca_file.read_text()).context()
        window = RedisWindow.from_url(group.tls_url, tls=tls)
        try:
            decisions = await asyncio.gather(
                *(window.acquire("sentinel:chat", QUOTA, 0) for _ in range(60))
            )
        finally:
            await window.close()
        assert sum(d.allowed for d in decisions) == 25
        assert group.named_master() == group.master.tls_port
        untrusted = RedisWindow.from_url(group.tls_url, tls=RedisTls().context())
        with pytest.raises(RedisUnavailable, match="no sentinel named master") as caught:
            await untrusted.acquire("sentinel:chat", QUOTA, 0)
        await untrusted.close()
        assert str(caught.value).count("TLS certificate verification failed") == 3
