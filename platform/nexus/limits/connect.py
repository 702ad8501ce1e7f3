"""The Redis client a ``GATEWAY_REDIS_URL`` asks for: one node, a Cluster or Sentinels."""

from __future__ import annotations

import ssl

from nexus.config import parse_redis_url
from nexus.limits.cluster import ClusterClient
from nexus.limits.resp import Endpoint, Redis, RespClient
from nexus.limits.sentinel import SentinelClient


def connect(url: str, *, tls: ssl.SSLContext | None = None) -> Redis:
    """A client for ``url`` (``nexus.config.parse_redis_url``); it connects on first use.
    ``tls`` verifies ``rediss`` nodes (``nexus.config.RedisTls.context``)."""
    target = parse_redis_url(url)
    if target.kind == "cluster":
        return ClusterClient(target, tls=tls)
    if target.kind == "sentinel":
        return SentinelClient(target, tls=tls)
    return RespClient(Endpoint.of(target, *target.nodes[0]), tls=tls)
