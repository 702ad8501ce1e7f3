"""What a transformer process holds while it serves, and what one request carries.

``open_components`` runs once, in the lifespan: it opens the JWKS session (when a JWKS URL is
set) and wires the governor (auth, model access, limits), the upstream (client and circuit
breaker) and the limiter, which the lean routes and KServe's app then share. ``Exchange`` is
one request's facts, filled in as it is served and turned into the access-log line and
metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nexus.auth import ApiKeyStore, Authenticator, JwtVerifier
from nexus.breaker import CircuitBreaker, State
from nexus.config import GatewaySettings, parse_redis_url
from nexus.edge.asgi import Headers
from nexus.edge.wire import FALLBACK_HEADER
from nexus.limits import InProcessWindow, RateLimiter, RedisWindow
from nexus.observability import TransformerMetrics
from nexus.transformer.governance import Governor
from nexus.transformer.upstream import Upstream, new_client

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("nexus.transformer")


def is_fallback(headers: dict[bytes, bytes]) -> bool:
    """A call the router made because the step before failed (``edge.wire``): charged its
    tokens but not counted as a second request."""
    return bool(headers.get(FALLBACK_HEADER, b"").strip())


@dataclass(slots=True)
class Exchange:
    """One request's facts, filled in as it is served; becomes the log line and metrics."""

    method: str
    route: str
    request_id: str
    trace_id: str | None
    started: float
    headers: Headers
    status: int = 0
    model: str | None = None
    principal: str | None = None
    tenant: str | None = None
    upstream: str | None = None
    tokens: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass(slots=True)
class Components:
    """What exists only while the server runs (it needs the event loop)."""

    governor: Governor
    upstream: Upstream
    limiter: RateLimiter
    close: list[Any]


def new_session() -> aiohttp.ClientSession:
    """The aiohttp session of one server process, used for JWKS fetches only.

    aiohttp is imported here, not with the module: it adds 9 MiB to a transformer's RSS,
    and only a transformer given ``GATEWAY_JWT_JWKS_URL`` uses it.
    """
    import aiohttp

    return aiohttp.ClientSession(skip_auto_headers=("User-Agent",))


async def open_components(settings: GatewaySettings, metrics: TransformerMetrics) -> Components:
    """Everything a serving process holds, opened once; the session is closed if a step fails."""
    session = new_session() if settings.jwt.jwks_url else None
    try:
        return build_components(settings, metrics, session)
    except BaseException:
        if session is not None:
            await session.close()
        raise


def build_components(
    settings: GatewaySettings, metrics: TransformerMetrics, session: aiohttp.ClientSession | None
) -> Components:
    """The governor, upstream and limiter of one server process.

    ``session`` (aiohttp, present when a JWKS URL is set) only fetches JWKS; the predictor
    is called through the lean upstream client (``nexus.edge.client``).
    """
    upstream_name = settings.predictor_host
    breaker = CircuitBreaker(
        name=upstream_name,
        max_failures=settings.breaker_max_failures,
        reset_seconds=settings.breaker_reset_seconds,
        on_change=lambda _old, new: _breaker_changed(metrics, upstream_name, new),
    )
    metrics.circuit_state.labels(upstream_name).set(0)
    client = new_client(timeout_seconds=settings.request_timeout_seconds)
    redis = None
    if settings.redis_url:
        # One context per process, made at start (the CA file was read by load_settings);
        # loading the system's CAs took 21-33 ms here (`ssl.create_default_context()` timed
        # twice, 2026-12-07), so only for a rediss URL.
        tls = settings.redis_tls.context() if parse_redis_url(settings.redis_url).tls else None
        redis = RedisWindow.from_url(settings.redis_url, tls=tls)
    if redis is None:
        log.warning("GATEWAY_REDIS_URL unset: rate limits are per process (one replica only)")
    limiter = RateLimiter(
        redis=redis,
        local=InProcessWindow(),
        failure_mode=settings.failure_mode,
        events=metrics,
    )
    metrics.limiter_degraded.set(0)
    jwt = JwtVerifier(settings.jwt, session=session) if settings.jwt.enabled else None
    authenticator = Authenticator(
        keys=ApiKeyStore(settings.api_keys, settings.key_policies), jwt=jwt
    )
    return Components(
        governor=Governor(
            settings=settings,
            authenticator=authenticator,
            limiter=limiter,
            metrics=metrics,
        ),
        upstream=Upstream(
            name=upstream_name,
            base_url=settings.upstream_base_url,
            client=client,
            breaker=breaker,
            metrics=metrics,
        ),
        limiter=limiter,
        close=[*([session.close] if session is not None else []), client.close, limiter.close],
    )


def _breaker_changed(metrics: TransformerMetrics, upstream: str, new: State) -> None:
    metrics.circuit_state.labels(upstream).set(int(new))
    if new is State.OPEN:
        metrics.circuit_open.labels(upstream).inc()
    log.warning("circuit for %s is now %s", upstream, new.name.lower())
