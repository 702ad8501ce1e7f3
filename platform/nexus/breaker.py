"""Circuit breaker per upstream: a pure state machine with an injected clock.

    CLOSED ──N consecutive failures──► OPEN ──reset time elapsed──► HALF_OPEN
      ▲                                 ▲                               │
      └────────── probe succeeded ──────┼───────────────────────────────┤
                                        └──────── probe failed ─────────┘

Only upstream failures count (connection refused, timeout, 5xx); a 4xx is the client's
fault and counts as a success for the upstream. In HALF_OPEN exactly one probe is let
through; concurrent callers are refused while it runs. A probe abandoned without a
verdict (the client went away) frees the slot for the next caller.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from nexus.errors import CircuitOpen

Clock = Callable[[], float]


class State(enum.IntEnum):
    """Numeric values are what the ``nexus_transformer_circuit_state`` gauge exports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(slots=True)
class Permit:
    """Proof that a call was admitted; ``probe`` marks the single HALF_OPEN trial."""

    probe: bool
    settled: bool = False


Listener = Callable[[State, State], None]


class CircuitBreaker:
    """Decides whether a call to one upstream may go out, from the outcomes of earlier calls."""

    def __init__(
        self,
        *,
        name: str,
        max_failures: int,
        reset_seconds: float,
        clock: Clock = time.monotonic,
        on_change: Listener | None = None,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.name = name
        self._max_failures = max_failures
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._on_change = on_change
        self._state = State.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_running = False

    @property
    def state(self) -> State:
        """The current state, moving OPEN to HALF_OPEN once the reset time has passed."""
        if self._state is State.OPEN and self._clock() - self._opened_at >= self._reset_seconds:
            self._transition(State.HALF_OPEN)
        return self._state

    def acquire(self) -> Permit:
        """Admit a call or raise ``CircuitOpen`` with the seconds until the next probe."""
        state = self.state
        if state is State.CLOSED:
            return Permit(probe=False)
        if state is State.HALF_OPEN and not self._probe_running:
            self._probe_running = True
            return Permit(probe=True)
        if state is State.OPEN:
            retry_after = self._reset_seconds - (self._clock() - self._opened_at)
            message = f"circuit open for upstream {self.name}: too many consecutive failures"
        else:
            retry_after = 1.0
            message = f"circuit half-open for upstream {self.name}: a probe is in flight"
        raise CircuitOpen(message, retry_after=max(retry_after, 0.0), upstream=self.name)

    def success(self, permit: Permit) -> None:
        if permit.settled:
            return
        permit.settled = True
        if permit.probe:
            self._probe_running = False
            self._failures = 0
            self._transition(State.CLOSED)
        elif self._state is State.CLOSED:
            # A straggler admitted before the circuit opened proves nothing about now.
            self._failures = 0

    def failure(self, permit: Permit) -> None:
        if permit.settled:
            return
        permit.settled = True
        if permit.probe:
            self._probe_running = False
            self._open()
            return
        self._failures += 1
        if self._state is State.CLOSED and self._failures >= self._max_failures:
            self._open()

    def release(self, permit: Permit) -> None:
        """Forget a call that ended without a verdict (cancelled before the upstream answered)."""
        if permit.settled:
            return
        permit.settled = True
        if permit.probe:
            self._probe_running = False

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._transition(State.OPEN)

    def _transition(self, new: State) -> None:
        old, self._state = self._state, new
        if old is not new and self._on_change is not None:
            self._on_change(old, new)
