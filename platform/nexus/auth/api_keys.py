"""API keys: plain or ``sha256:<hex>`` entries, looked up by digest in constant time.

Keys are stored only as SHA-256 digests and a presented key is hashed before the lookup,
so whatever time the lookup takes depends on a digest the caller cannot steer, never on
how many leading characters of a real key were guessed: comparing in constant time
without a linear scan over every key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from nexus.auth.principal import Principal
from nexus.config import KeyPolicy


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _entry_digest(entry: str) -> bytes:
    if entry.startswith("sha256:"):
        return bytes.fromhex(entry.removeprefix("sha256:"))
    return key_digest(entry)


class ApiKeyStore:
    """Maps presented keys to principals carrying their policy."""

    def __init__(self, keys: Iterable[str], policies: Mapping[str, KeyPolicy]) -> None:
        by_digest = {_entry_digest(entry): entry for entry in keys}
        # A policy may be keyed by the plain key or by its sha256 form.
        policy_by_digest = {_entry_digest(entry): policy for entry, policy in policies.items()}
        self._principals: dict[bytes, Principal] = {}
        for digest in by_digest:
            policy = policy_by_digest.get(digest, KeyPolicy())
            self._principals[digest] = Principal(
                id="key:" + digest.hex()[:12],
                kind="api_key",
                allowed_models=policy.allowed_models,
                rate_limit_per_minute=policy.rate_limit_per_minute,
                tokens_per_minute=policy.tokens_per_minute,
                tenant=policy.tenant,
            )

    def __len__(self) -> int:
        return len(self._principals)

    def authenticate(self, key: str) -> Principal | None:
        return self._principals.get(key_digest(key))
