"""The in-process twin of ``acquire.lua``: one-second buckets, their precision against an
exact sliding window, token reservations and resets, with a fake clock."""

from __future__ import annotations

import random

import pytest

from nexus.limits import InProcessWindow, Quota


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_requests_slide_out_of_the_window_exactly() -> None:
    clock = Clock()
    window = InProcessWindow(clock=clock)
    quota = Quota(requests_per_minute=3, tokens_per_minute=0)
    for i in range(3):
        clock.now = i * 10.0 + 0.5
        assert window.acquire_now("k", quota, 0).allowed
    clock.now = 20.5
    refused = window.acquire_now("k", quota, 0)
    assert not refused.allowed
    assert refused.reason == "requests"
    # The first one (t=0.5) counts until its second's bucket leaves: t=61, not t=60.5.
    assert refused.retry_after == pytest.approx(40.5)
    clock.now = 60.999
    assert not window.acquire_now("k", quota, 0).allowed
    clock.now = 61.0
    decision = window.acquire_now("k", quota, 0)
    assert decision.allowed
    assert decision.requests_remaining == 0


def test_keys_are_independent() -> None:
    window = InProcessWindow(clock=Clock())
    quota = Quota(requests_per_minute=1, tokens_per_minute=0)
    assert window.acquire_now("alice:chat", quota, 0).allowed
    assert window.acquire_now("bob:chat", quota, 0).allowed
    assert not window.acquire_now("alice:chat", quota, 0).allowed


@pytest.mark.asyncio
async def test_token_reservation_is_settled_with_real_usage() -> None:
    clock = Clock()
    window = InProcessWindow(clock=clock)
    quota = Quota(requests_per_minute=0, tokens_per_minute=1000)
    first = window.acquire_now("k", quota, 600)
    assert first.allowed
    assert first.tokens_remaining == 400
    assert not window.acquire_now("k", quota, 600).allowed
    await window.settle("k", first.second, 600, 100)  # the call used far less than reserved
    second = window.acquire_now("k", quota, 600)
    assert second.allowed
    assert second.tokens_remaining == 300


def test_token_retry_after_waits_for_enough_tokens_to_leave() -> None:
    clock = Clock()
    window = InProcessWindow(clock=clock)
    quota = Quota(requests_per_minute=0, tokens_per_minute=100)
    window.acquire_now("k", quota, 40)
    clock.now = 10
    window.acquire_now("k", quota, 40)
    clock.now = 20
    refused = window.acquire_now("k", quota, 50)
    assert refused.reason == "tokens"
    # 80 used + 50 wanted - 100 allowed = 30 must leave: the bucket of t=0 leaves at t=61.
    assert refused.retry_after == pytest.approx(41)


def test_refused_requests_take_nothing() -> None:
    window = InProcessWindow(clock=Clock())
    quota = Quota(requests_per_minute=10, tokens_per_minute=100)
    assert window.acquire_now("k", quota, 90).allowed
    refused = window.acquire_now("k", quota, 50)
    assert not refused.allowed
    assert refused.requests_remaining == 9
    assert refused.tokens_remaining == 10


def test_a_fallback_step_is_charged_tokens_but_not_counted_as_a_request() -> None:
    window = InProcessWindow(clock=Clock())
    counted = Quota(requests_per_minute=2, tokens_per_minute=100)
    fallback = Quota(requests_per_minute=2, tokens_per_minute=100, count_request=False)
    assert window.acquire_now("k", counted, 10).allowed
    assert window.acquire_now("k", counted, 10).allowed
    # The window is full for new requests, but a fallback of one already counted passes...
    decision = window.acquire_now("k", fallback, 10)
    assert decision.allowed
    assert decision.tokens_remaining == 70
    # ...and is still held to the token budget.
    assert not window.acquire_now("k", fallback, 80).allowed
    assert not window.acquire_now("k", counted, 1).allowed


def _exact_count(times: list[float], start: float, end: float) -> int:
    """Admissions in the half-open interval (start, end]."""
    return sum(start < t <= end for t in times)


def test_precision_against_an_exact_sliding_window() -> None:
    """The bound ``redis_backend`` states: each decision sees a count between the exact
    count of the last 60 s and that of the last 61 s, so no 60 s ever admit more than the
    limit, and a call is refused only when the last 61 s hold the limit."""
    rng = random.Random(22)
    clock = Clock()
    window = InProcessWindow(clock=clock)
    limit = 20
    quota = Quota(requests_per_minute=limit, tokens_per_minute=0)
    admitted: list[float] = []
    refusals = 0
    for _ in range(6000):
        clock.now += rng.expovariate(1 / 0.5) if rng.random() < 0.9 else rng.uniform(5, 40)
        decision = window.acquire_now("k", quota, 0)
        now = clock.now
        if decision.allowed:
            assert _exact_count(admitted, now - 60, now) < limit
            admitted.append(now)
        else:
            refusals += 1
            assert _exact_count(admitted, now - 61, now) >= limit
            exact_wait = sorted(admitted)[-limit] + 60 - now  # when an exact window admits
            assert exact_wait <= decision.retry_after <= exact_wait + 1  # type: ignore[operator]
    assert refusals > 1000  # the bound was exercised on both sides
    assert len(admitted) > 1000
    for i, t in enumerate(admitted):  # no 60 s ever held more than the limit
        assert _exact_count(admitted, t - 60, t) <= limit, i


def test_state_is_constant_whatever_the_traffic() -> None:
    clock = Clock()
    window = InProcessWindow(clock=clock)
    quota = Quota(requests_per_minute=10**9, tokens_per_minute=10**12)
    for i in range(200_000):
        clock.now = i / 1000  # 1,000 a second for 200 s
        window.acquire_now("k", quota, 10)
    state = window._windows["k"]
    assert len(state.requests.counts) == len(state.tokens.counts) == 61
    assert state.requests.total == 61_000  # the seconds 139..199
