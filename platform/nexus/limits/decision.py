"""What a limiter answers: admitted or not, and the numbers behind the rate-limit headers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class Quota:
    """Per-minute budgets of one principal on one model; 0 means unlimited."""

    requests_per_minute: int
    tokens_per_minute: int
    # False for the fallback step of a request another replica already counted: its
    # tokens are charged, but it is not a second request (issue 12, item 4).
    count_request: bool = True


@dataclass(slots=True)
class Decision:
    """The verdict on one request and the state of both windows after it.

    Not frozen: one is made per request, and a frozen dataclass sets each field through
    ``object.__setattr__`` (a third of the limiter's Python time per call, measured).
    """

    allowed: bool
    quota: Quota
    requests_remaining: int
    requests_reset: float
    tokens_remaining: int
    tokens_reset: float
    reason: Literal["requests", "tokens"] | None = None
    retry_after: float | None = None
    # The second (of the backend's clock) whose bucket holds this call's tokens: what a
    # settlement names to correct them.
    second: int = 0


@dataclass(slots=True)
class Reservation:
    """Tokens held for an admitted request until its real usage is known."""

    key: str
    second: int
    tokens: int
    backend: Backend
    settled: bool = False


class Backend(Protocol):
    """Where window state lives: Redis (shared by replicas) or this process."""

    async def acquire(self, key: str, quota: Quota, tokens: int) -> Decision: ...

    async def settle(self, key: str, second: int, reserved: int, actual: int) -> None: ...
