"""Who is calling, and what they may do: the outcome of authentication."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``id`` is safe to log and to key limits on; never a secret."""

    id: str
    kind: Literal["api_key", "jwt"]
    allowed_models: frozenset[str] | None = None
    rate_limit_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tenant: str | None = None

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models
