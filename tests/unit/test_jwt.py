"""JWT verification with real keys: algorithms, claims, confusion attacks, and a live JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt as pyjwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from nexus.auth import ApiKeyStore, Authenticator
from nexus.auth.jwt import JwtVerifier
from nexus.config import JwtSettings, load_settings
from nexus.errors import AuthenticationFailed
from nexus.observability import TransformerMetrics, new_registry
from nexus.transformer.components import open_components

SECRET = "test-only-hs256-secret-0123456789abcdef"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": int(time.time()) + 300, **extra}


async def verify(settings: JwtSettings, token: str) -> Any:
    return await JwtVerifier(settings, session=None).verify(token)


async def test_hs256_token_becomes_a_principal_with_its_claims() -> None:
    token = pyjwt.encode(claims(models=["chat"], rpm=7, tpm=700, tenant="acme"), SECRET)
    principal = await verify(JwtSettings(secret=SECRET), token)
    assert principal.id == "jwt:alice"
    assert principal.allowed_models == frozenset({"chat"})
    assert (principal.rate_limit_per_minute, principal.tokens_per_minute) == (7, 700)
    assert principal.tenant == "acme"


@pytest.mark.parametrize(("key", "alg"), [(RSA_KEY, "RS256"), (EC_KEY, "ES256")])
async def test_public_key_algorithms(key: Any, alg: str) -> None:
    token = pyjwt.encode(claims(), key, algorithm=alg)
    principal = await verify(JwtSettings(public_key=pem(key)), token)
    assert principal.id == "jwt:alice"


@pytest.mark.parametrize(
    ("token_claims", "message"),
    [
        ({"sub": "a", "exp": -60}, "expired"),
        ({"sub": "a", "exp": 60, "nbf": 600}, "not valid yet"),
        ({"sub": "a"}, "required claim 'exp'"),
        ({"exp": 60}, "'sub'"),
        ({"sub": "a", "exp": 60, "models": "chat"}, "'models'"),
        ({"sub": "a", "exp": 60, "rpm": "10"}, "'rpm'"),
    ],
)  # fmt: skip
async def test_bad_claims_are_refused(token_claims: dict[str, Any], message: str) -> None:
    """Times in the table are offsets from now, made absolute when the test runs."""
    now = int(time.time())
    absolute = {k: now + v if k in ("exp", "nbf") else v for k, v in token_claims.items()}
    token = pyjwt.encode(absolute, SECRET)
    with pytest.raises(AuthenticationFailed, match=message):
        await verify(JwtSettings(secret=SECRET), token)


async def test_audience_and_issuer_are_enforced() -> None:
    settings = JwtSettings(secret=SECRET, audience="nexus", issuer="https://idp.example")
    good = pyjwt.encode(claims(aud="nexus", iss="https://idp.example"), SECRET)
    assert (await verify(settings, good)).id == "jwt:alice"
    with pytest.raises(AuthenticationFailed, match="audience"):
        await verify(settings, pyjwt.encode(claims(aud="other", iss="https://idp.example"), SECRET))
    with pytest.raises(AuthenticationFailed, match="issuer"):
        await verify(settings, pyjwt.encode(claims(aud="nexus", iss="https://evil"), SECRET))


async def test_forged_signature_is_refused() -> None:
    token = pyjwt.encode(claims(), "some-other-secret-of-enough-length-000")
    with pytest.raises(AuthenticationFailed, match="signature"):
        await verify(JwtSettings(secret=SECRET), token)


async def test_alg_none_is_refused() -> None:
    token = pyjwt.encode(claims(), None, algorithm="none")
    with pytest.raises(AuthenticationFailed, match="not accepted"):
        await verify(JwtSettings(secret=SECRET), token)


async def test_hs_rs_confusion_is_refused() -> None:
    """An HS256 token signed with the RSA *public* key must not pass as RS256's key."""
    public_pem = pem(RSA_KEY)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(b'{"alg":"HS256","typ":"JWT"}')
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    forged = f"{header}.{payload}.{b64(signature.digest())}"
    settings = JwtSettings(public_key=public_pem, algorithms=("RS256", "HS256"))
    with pytest.raises(AuthenticationFailed, match="not accepted"):
        await verify(settings, forged)


async def test_authenticator_tells_keys_from_tokens() -> None:
    authenticator = Authenticator(
        keys=ApiKeyStore(["plain-key"], {}),
        jwt=JwtVerifier(JwtSettings(secret=SECRET), session=None),
    )
    assert (await authenticator.authenticate(b"plain-key", None)).kind == "api_key"
    token = pyjwt.encode(claims(), SECRET).encode()
    assert (await authenticator.authenticate(None, b"Bearer " + token)).kind == "jwt"
    with pytest.raises(AuthenticationFailed, match="missing credentials"):
        await authenticator.authenticate(None, b"Basic dXNlcjpwYXNz")
    with pytest.raises(AuthenticationFailed, match="invalid API key"):
        await authenticator.authenticate(None, b"Bearer wrong")


# ── JWKS over a real HTTP server ─────────────────────────────────────────────────────────


@pytest.fixture
async def jwks_server() -> AsyncIterator[dict[str, Any]]:
    state: dict[str, Any] = {"keys": [], "hits": 0}

    async def handler(_: web.Request) -> web.Response:
        state["hits"] += 1
        return web.json_response({"keys": state["keys"]})

    app = web.Application()
    app.router.add_get("/jwks", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state["url"] = f"http://127.0.0.1:{port}/jwks"
    yield state
    await runner.cleanup()


def jwk(key: Any, kid: str) -> dict[str, Any]:
    data: dict[str, Any] = pyjwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "alg": "RS256", "use": "sig"}


async def test_jwks_is_cached_and_refreshed_on_unknown_kid(jwks_server: dict[str, Any]) -> None:
    first, second = RSA_KEY, rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks_server["keys"] = [jwk(first, "k1")]
    skew = [0.0]

    def clock() -> float:
        return time.time() + skew[0]

    async with aiohttp.ClientSession() as session:
        settings = JwtSettings(jwks_url=jwks_server["url"])
        verifier = JwtVerifier(settings, session=session, clock=clock)
        for n in range(3):
            token = pyjwt.encode(claims(n=n), first, algorithm="RS256", headers={"kid": "k1"})
            assert (await verifier.verify(token)).id == "jwt:alice"
        assert jwks_server["hits"] == 1
        # Key rotation: the IdP publishes k2; a token naming it triggers one refetch.
        jwks_server["keys"] = [jwk(first, "k1"), jwk(second, "k2")]
        token = pyjwt.encode(claims(), second, algorithm="RS256", headers={"kid": "k2"})
        with pytest.raises(AuthenticationFailed, match="unknown key id"):
            await verifier.verify(token)  # refetches are spaced: the first fetch was just now
        skew[0] = 31  # past the minimum spacing between refetches
        assert (await verifier.verify(token)).id == "jwt:alice"
        assert jwks_server["hits"] == 2


async def test_a_transformer_given_a_jwks_url_fetches_it_through_its_own_session(
    jwks_server: dict[str, Any],
) -> None:
    """The transformer opens its aiohttp session only for a JWKS URL (issue 23)."""
    jwks_server["keys"] = [jwk(RSA_KEY, "k1")]
    env = {"GATEWAY_API_KEYS": "k", "GATEWAY_JWT_JWKS_URL": jwks_server["url"]}
    settings = load_settings(env, model_name="chat", predictor_host="127.0.0.1:9")
    parts = await open_components(settings, TransformerMetrics(new_registry()))
    try:
        token = pyjwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "k1"})
        principal = await parts.governor.authenticate(None, f"Bearer {token}".encode())
        assert principal.id == "jwt:alice"
        assert jwks_server["hits"] == 1
    finally:
        for close in parts.close:
            await close()
