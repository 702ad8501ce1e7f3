"""The Redis client a ``GATEWAY_REDIS_URL`` asks for: one node, a Cluster or Sentinels."""

from __future__ import annotations

from nexus.config import parse_redis_url
from nexus.limits.cluster import ClusterClient
from nexus.limits.resp import Endpoint, Redis, RespClient
from nexus.limits.sentinel import SentinelClient


def connect(url: str) -> Redis:
    """A client for ``url`` (``nexus.config.parse_redis_url``); it connects on first use."""
    target = parse_redis_url(url)
    if target.kind == "cluster":
        return ClusterClient(target)
    if target.kind == "sentinel":
        return SentinelClient(target)
    return RespClient(Endpoint.of(target, *target.nodes[0]))
