"""The policy gate every inference request passes: who, which model, how much.

``Governor.authenticate`` turns the request's credential into a ``Principal`` (the route
table's ``Keyed`` guard calls it before any handler runs); ``Governor.admit`` then checks
the model is served here and allowed for that principal, and takes the request (and its
token estimate) from the rate-limit windows.
The answer carries the ``x-ratelimit-*`` headers every response repeats.
``Governor.settle`` closes the request's account: the usage ``usage.py`` read from the
answer is charged and counted, the rest of the reservation given back.
"""

from __future__ import annotations

from dataclasses import dataclass

from nexus.auth import Authenticator, Principal
from nexus.config import GatewaySettings
from nexus.edge.asgi import Headers
from nexus.errors import ModelNotFound, PermissionDenied, RateLimited
from nexus.limits import Decision, Quota, RateLimiter, Reservation
from nexus.observability import TransformerMetrics
from nexus.transformer.usage import Usage

MAX_CACHED_QUOTAS = 1024


@dataclass(slots=True)
class Admission:
    principal: Principal
    decision: Decision
    reservation: Reservation | None

    def headers(self) -> Headers:
        return rate_limit_headers(self.decision)


def _duration(seconds: float) -> bytes:
    """OpenAI's reset format: ``250ms``, ``12s``, ``1m30s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms".encode()
    minutes, rest = divmod(seconds, 60)
    if minutes:
        return f"{int(minutes)}m{int(rest)}s".encode()
    return f"{rest:.3g}s".encode()


def rate_limit_headers(decision: Decision) -> Headers:
    quota = decision.quota
    headers: Headers = []
    if quota.requests_per_minute:
        headers += [
            (b"x-ratelimit-limit-requests", b"%d" % quota.requests_per_minute),
            (b"x-ratelimit-remaining-requests", b"%d" % decision.requests_remaining),
            (b"x-ratelimit-reset-requests", _duration(decision.requests_reset)),
        ]
    if quota.tokens_per_minute:
        headers += [
            (b"x-ratelimit-limit-tokens", b"%d" % quota.tokens_per_minute),
            (b"x-ratelimit-remaining-tokens", b"%d" % decision.tokens_remaining),
            (b"x-ratelimit-reset-tokens", _duration(decision.tokens_reset)),
        ]
    return headers


class Governor:
    """Authentication, model access and rate limits for one transformer."""

    def __init__(
        self,
        *,
        settings: GatewaySettings,
        authenticator: Authenticator,
        limiter: RateLimiter,
        metrics: TransformerMetrics,
    ) -> None:
        self._settings = settings
        self._authenticator = authenticator
        self._limiter = limiter
        self._metrics = metrics
        self._served = frozenset(settings.public_models)
        # Quotas come from the settings, key policies and signed JWT claims: a handful,
        # made once each (dropped whole past MAX_CACHED_QUOTAS, should an issuer vary them).
        self._quotas: dict[tuple[int, int, bool], Quota] = {}

    async def authenticate(self, api_key: bytes | None, authorization: bytes | None) -> Principal:
        return await self._authenticator.authenticate(api_key, authorization)

    def check_model(self, principal: Principal, model: str) -> None:
        if model not in self._served:
            raise ModelNotFound(
                # Not the list of served names: a key may not be allowed to see them all.
                f"model {model!r} is not served here; GET /v1/models lists the models"
                " this credential may use",
                param="model",
            )
        if not principal.may_use(model):
            raise PermissionDenied(f"this credential may not use model {model!r}", param="model")

    async def admit(
        self, principal: Principal, model: str, tokens: int, *, fallback: bool = False
    ) -> Admission:
        """Take one request and ``tokens`` from the principal's windows, or raise 429.

        Windows are keyed by the InferenceService this transformer serves, never by the
        public name asked for: ``chat`` and ``chat-alias`` on one predictor share one budget.
        A ``fallback`` call (the router's Sequence retrying on this ISVC a request another
        one failed) is charged its tokens but not counted as a second request.
        """
        self.check_model(principal, model)
        quota = self._quota(principal, count_request=not fallback)
        key = f"{principal.id}:{self._settings.model_name}"
        decision, reservation = await self._limiter.acquire(key, quota, tokens)
        if not decision.allowed:
            self._count_limited(principal, decision)
            if decision.reason == "tokens" and tokens > quota.tokens_per_minute:
                message = (
                    f"request needs about {tokens} tokens, more than the {quota.tokens_per_minute}"
                    " tokens per minute allowed; lower max_tokens or the prompt"
                )
            else:
                message = f"rate limit reached for {decision.reason} per minute on model {model!r}"
            error = RateLimited(message, retry_after=decision.retry_after or 1.0)
            error.extra_headers = rate_limit_headers(decision)
            raise error
        return Admission(principal, decision, reservation)

    def _quota(self, principal: Principal, *, count_request: bool) -> Quota:
        settings = self._settings
        rpm = _pick(principal.rate_limit_per_minute, settings.rate_limit_per_minute)
        tpm = _pick(principal.tokens_per_minute, settings.tokens_per_minute)
        quota = self._quotas.get((rpm, tpm, count_request))
        if quota is None:
            if len(self._quotas) >= MAX_CACHED_QUOTAS:
                self._quotas.clear()
            quota = self._quotas[rpm, tpm, count_request] = Quota(rpm, tpm, count_request)
        return quota

    async def settle(self, admission: Admission, usage: Usage | None) -> None:
        """Charge what the call used; the rest of the reservation (all of it when the
        call failed or nothing came back) is given back to the principal's windows."""
        if usage is not None:
            tenant = (admission.principal.tenant or "",) if self._metrics.tenant_label else ()
            self._metrics.count_tokens(usage.prompt, usage.completion, tenant)
        if admission.reservation is not None:
            await self._limiter.settle(admission.reservation, usage.total if usage else 0)

    def _count_limited(self, principal: Principal, decision: Decision) -> None:
        labels: list[str] = [decision.reason or "requests"]
        if self._metrics.tenant_label:
            labels.append(principal.tenant or "")
        self._metrics.rate_limited.labels(*labels).inc()


def _pick(specific: int | None, default: int) -> int:
    return default if specific is None else specific
