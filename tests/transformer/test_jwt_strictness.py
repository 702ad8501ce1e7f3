"""One spelling per token, and clear refusals for odd claims (issue 12, item 13).

Each case is a bearer JWT sent to a real transformer process (the shared gateway).
"""

from __future__ import annotations

import time

import httpx
import jwt as pyjwt
import pytest

from tests.transformer.conftest import JWT_SECRET, chat, token


def _call(client: httpx.Client, bearer: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"}
    return client.post("/v1/chat/completions", json=chat(), headers=headers)


def _respell(good: str) -> list[str]:
    """Other spellings of the same signature: padded, and a non-canonical last character."""
    head, payload, signature = good.split(".")
    spellings = [f"{good}=", f"{good}==", f"{head}=.{payload}.{signature}"]
    # HS256 signatures are 32 bytes = 43 base64url characters, the last carrying 2 unused
    # bits: flipping one of them decodes to the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    for flip in (1, 2, 3):
        twin = alphabet[(last & ~3) | ((last & 3) ^ flip)]
        spellings.append(f"{head}.{payload}.{signature[:-1]}{twin}")
    spellings.append(f"{head}.{payload}.{signature[:20]}+{signature[21:]}")
    return spellings


@pytest.mark.usefixtures("healthy")
def test_a_token_has_one_spelling(client: httpx.Client) -> None:
    good = token()
    assert _call(client, good).status_code == 200
    for spelling in _respell(good):
        response = _call(client, spelling)
        assert response.status_code == 401, spelling
        assert response.json()["error"]["type"] == "authentication_error"


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_numeric_date_claims_as_strings_are_refused(client: httpx.Client, claim: str) -> None:
    now = int(time.time())
    claims = {"sub": "svc", "exp": now + 300, claim: str(now + 300 if claim == "exp" else now)}
    response = _call(client, pyjwt.encode(claims, JWT_SECRET))
    assert response.status_code == 401
    assert claim in response.json()["error"]["message"]


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize("claim", ["rpm", "tpm"])
def test_negative_limit_claims_are_401_not_a_permanent_429(
    client: httpx.Client, claim: str
) -> None:
    for _ in range(3):
        response = _call(client, token(**{claim: -1}))
        assert response.status_code == 401
        assert "non-negative" in response.json()["error"]["message"]


@pytest.mark.usefixtures("healthy")
def test_a_future_iat_is_reported_as_iat(client: httpx.Client) -> None:
    response = _call(client, token(iat=int(time.time()) + 3600))
    assert response.status_code == 401
    assert "(iat)" in response.json()["error"]["message"]
    response = _call(client, token(nbf=int(time.time()) + 3600))
    assert "(nbf)" in response.json()["error"]["message"]
