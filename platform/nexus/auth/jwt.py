"""JWT bearer tokens: HS256 secret, PEM public key (RS/ES/PS), or a JWKS endpoint.

The key is chosen by the token's algorithm family, never by what the token claims about
itself: an HS* token is checked only against the shared secret and an RS/ES/PS token only
against public keys, so a public key can never be misused as an HMAC secret (the HS/RS
confusion attack). ``none`` is never accepted. ``exp`` is required; ``nbf``, ``aud`` and
``iss`` are enforced when configured. Verified tokens are cached until they expire, so a
client reusing its token pays the signature check once.

Claims that shape policy: ``models`` (allowed model names), ``rpm``, ``tpm``, ``tenant``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt as pyjwt

from nexus.auth.principal import Principal
from nexus.config import JwtSettings
from nexus.errors import AuthenticationFailed

Clock = Callable[[], float]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
LEEWAY_SECONDS = 5
CACHE_SIZE = 10_000
JWKS_MIN_REFRESH_SECONDS = 30.0


def looks_like_jwt(token: str) -> bool:
    """Three base64url segments whose header starts like JSON (``eyJ`` is ``{"``)."""
    return token.startswith("eyJ") and token.count(".") == 2


def _default_algorithms(settings: JwtSettings) -> tuple[str, ...]:
    if settings.algorithms:
        return settings.algorithms
    algorithms: list[str] = []
    if settings.secret:
        algorithms.append("HS256")
    if settings.public_key or settings.jwks_url:
        algorithms += ["RS256", "ES256"]
    return tuple(algorithms)


class JwksCache:
    """Public keys from a JWKS endpoint, refetched when a token names an unknown ``kid``.

    Refetches are spaced by ``JWKS_MIN_REFRESH_SECONDS`` so a flood of tokens with made-up
    key ids cannot turn the gateway into a load generator against the identity provider.
    """

    def __init__(self, url: str, *, session: aiohttp.ClientSession, clock: Clock) -> None:
        self._url = url
        self._session = session
        self._clock = clock
        self._keys: dict[str, pyjwt.PyJWK] = {}
        self._fetched_at = -JWKS_MIN_REFRESH_SECONDS

    async def key(self, kid: str | None) -> pyjwt.PyJWK:
        found = self._lookup(kid)
        if found is None and self._clock() - self._fetched_at >= JWKS_MIN_REFRESH_SECONDS:
            await self._refresh()
            found = self._lookup(kid)
        if found is None:
            raise AuthenticationFailed("token signed with an unknown key id")
        return found

    def _lookup(self, kid: str | None) -> pyjwt.PyJWK | None:
        if kid is None:
            # Without a kid only an unambiguous single-key set can be used.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        self._fetched_at = self._clock()
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with self._session.get(self._url, timeout=timeout) as response:
                response.raise_for_status()
                data = await response.json(content_type=None)
            keyset = pyjwt.PyJWKSet.from_dict(data)
        except (aiohttp.ClientError, TimeoutError, ValueError, pyjwt.PyJWTError) as exc:
            # Keep the keys we had: an IdP hiccup must not log everybody out.
            raise AuthenticationFailed(f"cannot verify token: JWKS unavailable ({exc})") from exc
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}
        if not self._keys and keyset.keys:
            self._keys = {"": keyset.keys[0]}


class JwtVerifier:
    """Verifies bearer JWTs and turns their claims into a ``Principal``."""

    def __init__(
        self,
        settings: JwtSettings,
        *,
        session: aiohttp.ClientSession | None,
        clock: Clock = time.time,
    ) -> None:
        self._settings = settings
        self._algorithms = frozenset(_default_algorithms(settings))
        self._clock = clock
        self._jwks = (
            JwksCache(settings.jwks_url, session=session, clock=clock)
            if settings.jwks_url and session is not None
            else None
        )
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def verify(self, token: str) -> Principal:
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires = cached
            if self._clock() < expires:
                return principal
            del self._cache[token]
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError:
            raise AuthenticationFailed("malformed bearer token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise AuthenticationFailed(f"token algorithm {alg!r} is not accepted")
        key = await self._key_for(alg, header.get("kid"))
        claims = self._decode(token, key, alg)
        principal = _principal_from(claims)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[token] = (principal, float(claims["exp"]))
        return principal

    async def _key_for(self, alg: str, kid: object) -> Any:
        if alg in HMAC_ALGORITHMS:
            if not self._settings.secret:
                raise AuthenticationFailed(f"token algorithm {alg!r} is not accepted")
            return self._settings.secret
        if self._settings.public_key:
            return self._settings.public_key
        if self._jwks is not None:
            return (await self._jwks.key(kid if isinstance(kid, str) else None)).key
        raise AuthenticationFailed(f"token algorithm {alg!r} is not accepted")

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = pyjwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={
                    "require": ["exp"],
                    "verify_aud": self._settings.audience is not None,
                },
            )
        except pyjwt.ExpiredSignatureError:
            raise AuthenticationFailed("token has expired") from None
        except pyjwt.ImmatureSignatureError:
            raise AuthenticationFailed("token is not valid yet (nbf)") from None
        except pyjwt.InvalidAudienceError:
            raise AuthenticationFailed("token audience is not accepted") from None
        except pyjwt.InvalidIssuerError:
            raise AuthenticationFailed("token issuer is not accepted") from None
        except pyjwt.MissingRequiredClaimError as exc:
            raise AuthenticationFailed(f"token lacks the required claim {exc.claim!r}") from None
        except pyjwt.InvalidSignatureError:
            raise AuthenticationFailed("token signature is invalid") from None
        except (pyjwt.PyJWTError, ValueError, TypeError):
            raise AuthenticationFailed("token is invalid") from None
        return claims


def _principal_from(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthenticationFailed("token lacks a string 'sub' claim")
    models = claims.get("models")
    if models is not None and (
        not isinstance(models, list) or not all(isinstance(m, str) for m in models)
    ):
        raise AuthenticationFailed("token claim 'models' must be a list of strings")
    limits: dict[str, int | None] = {}
    for claim in ("rpm", "tpm"):
        value = claims.get(claim)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise AuthenticationFailed(f"token claim {claim!r} must be an integer")
        limits[claim] = value
    tenant = claims.get("tenant")
    return Principal(
        id="jwt:" + "".join(c for c in sub[:64] if c.isprintable()),
        kind="jwt",
        allowed_models=frozenset(models) if models is not None else None,
        rate_limit_per_minute=limits["rpm"],
        tokens_per_minute=limits["tpm"],
        tenant=tenant if isinstance(tenant, str) else None,
    )
