"""The circuit breaker state machine, driven by an injected clock."""

from __future__ import annotations

import pytest

from nexus.breaker import CircuitBreaker, State
from nexus.errors import CircuitOpen


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make(clock: Clock, changes: list[tuple[State, State]] | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        name="up",
        max_failures=3,
        reset_seconds=30,
        clock=clock,
        on_change=(lambda old, new: changes.append((old, new))) if changes is not None else None,
    )


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.failure(breaker.acquire())


def test_opens_after_consecutive_failures_only(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 2)
    breaker.success(breaker.acquire())  # a success resets the streak
    fail(breaker, 2)
    assert breaker.state is State.CLOSED
    fail(breaker, 1)
    assert breaker.state is State.OPEN


def test_open_refuses_immediately_with_retry_after(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.now += 10
    with pytest.raises(CircuitOpen) as refused:
        breaker.acquire()
    assert refused.value.retry_after == pytest.approx(20)
    assert refused.value.status == 503
    assert refused.value.body()["error"]["upstream_failure"] is True


def test_half_open_lets_exactly_one_probe_through(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.now += 30
    assert breaker.state is State.HALF_OPEN
    probe = breaker.acquire()
    assert probe.probe
    for _ in range(5):  # concurrent callers while the probe runs
        with pytest.raises(CircuitOpen):
            breaker.acquire()
    breaker.success(probe)
    assert breaker.state is State.CLOSED
    assert not breaker.acquire().probe


def test_failed_probe_reopens_for_a_full_reset_period(clock: Clock) -> None:
    changes: list[tuple[State, State]] = []
    breaker = make(clock, changes)
    fail(breaker, 3)
    clock.now += 31
    breaker.failure(breaker.acquire())
    assert breaker.state is State.OPEN
    clock.now += 29
    with pytest.raises(CircuitOpen):
        breaker.acquire()
    clock.now += 1
    assert breaker.state is State.HALF_OPEN
    assert changes == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
    ]


def test_abandoned_probe_frees_the_slot(clock: Clock) -> None:
    breaker = make(clock)
    fail(breaker, 3)
    clock.now += 30
    breaker.release(breaker.acquire())
    assert breaker.acquire().probe


def test_straggler_success_does_not_close_an_open_circuit(clock: Clock) -> None:
    breaker = make(clock)
    straggler = breaker.acquire()
    fail(breaker, 3)
    breaker.success(straggler)
    assert breaker.state is State.OPEN


def test_a_permit_is_settled_once(clock: Clock) -> None:
    breaker = make(clock)
    permit = breaker.acquire()
    breaker.failure(permit)
    breaker.failure(permit)
    breaker.failure(permit)
    assert breaker.state is State.CLOSED
