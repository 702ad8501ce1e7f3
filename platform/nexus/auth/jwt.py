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

import base64
import binascii
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jwt as pyjwt

from nexus.auth.principal import Principal
from nexus.config import JwtSettings
from nexus.errors import AuthenticationFailed

if TYPE_CHECKING:
    # Imported where a JWKS is fetched: a server without a JWKS URL never loads aiohttp.
    import aiohttp

Clock = Callable[[], float]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
LEEWAY_SECONDS = 5
CACHE_SIZE = 10_000
JWKS_MIN_REFRESH_SECONDS = 30.0
NUMERIC_DATES = ("exp", "nbf", "iat")
# RFC 7515 §2: base64url without padding. PyJWT also decodes padded or non-canonical
# segments, which gave one token several spellings (issue 12, item 13).
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def _canonical(token: str) -> bool:
    """Three unpadded base64url segments, the signature spelled the one canonical way."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_SEGMENT.fullmatch(p) for p in parts[:2]):
        return False
    signature = parts[2]
    if not signature:
        return True  # alg "none": refused by name below, with the clearer message
    if not _SEGMENT.fullmatch(signature):
        return False
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError):
        return False
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == signature


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
        import aiohttp  # loaded already: the session is aiohttp's

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
        if not _canonical(token):
            raise AuthenticationFailed(
                "malformed bearer token: segments must be unpadded base64url"
            )
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
        except pyjwt.ImmatureSignatureError as exc:
            # PyJWT raises the same error for a future ``iat`` and a future ``nbf``.
            claim = "iat" if "(iat)" in str(exc) else "nbf"
            raise AuthenticationFailed(f"token is not valid yet ({claim})") from None
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
        for name in NUMERIC_DATES:
            value = claims.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                # PyJWT 2.x accepts "exp": "1700000000" (it calls int() on it).
                raise AuthenticationFailed(f"token claim {name!r} must be a number (RFC 7519 §2)")
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
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            # As GATEWAY_API_KEY_POLICIES refuses negatives at start: a negative limit is
            # a broken token, not a key that is refused forever with 429.
            raise AuthenticationFailed(f"token claim {claim!r} must be a non-negative integer")
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
