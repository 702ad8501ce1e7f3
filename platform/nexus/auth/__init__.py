"""Authentication: who is calling, from ``X-API-Key`` or ``Authorization: Bearer``.

A bearer value that looks like a JWT is verified as one when JWT auth is configured;
anything else is treated as an API key. Failures raise ``AuthenticationFailed`` (401);
what a principal may do is checked by the caller with ``Principal.may_use``.
"""

from __future__ import annotations

from nexus.auth.api_keys import ApiKeyStore
from nexus.auth.jwt import JwtVerifier, looks_like_jwt
from nexus.auth.principal import Principal
from nexus.errors import AuthenticationFailed

__all__ = ["ApiKeyStore", "Authenticator", "JwtVerifier", "Principal", "credential_from"]


def credential_from(api_key: bytes | None, authorization: bytes | None) -> str | None:
    """The presented secret: ``X-API-Key`` wins over ``Authorization: Bearer``."""
    if api_key:
        return api_key.decode("latin-1").strip() or None
    if authorization:
        scheme, _, value = authorization.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


class Authenticator:
    """Turns a presented credential into a ``Principal`` or raises 401."""

    def __init__(self, *, keys: ApiKeyStore, jwt: JwtVerifier | None) -> None:
        self._keys = keys
        self._jwt = jwt

    async def authenticate(self, api_key: bytes | None, authorization: bytes | None) -> Principal:
        credential = credential_from(api_key, authorization)
        if credential is None:
            raise AuthenticationFailed(
                "missing credentials: send 'Authorization: Bearer <key or token>' or 'X-API-Key'"
            )
        if self._jwt is not None and looks_like_jwt(credential):
            return await self._jwt.verify(credential)
        principal = self._keys.authenticate(credential)
        if principal is None:
            raise AuthenticationFailed("invalid API key")
        return principal
