"""The in-process sliding window: exact counts, token reservations, resets, with a fake clock."""

from __future__ import annotations

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
        clock.now = i * 10.0
        assert window.acquire_now("k", quota, 0, f"m{i}").allowed
    refused = window.acquire_now("k", quota, 0, "m3")
    assert not refused.allowed
    assert refused.reason == "requests"
    assert refused.retry_after == pytest.approx(40.0)  # the first one leaves at t=60
    clock.now = 59.999
    assert not window.acquire_now("k", quota, 0, "m4").allowed
    clock.now = 60.0
    decision = window.acquire_now("k", quota, 0, "m5")
    assert decision.allowed
    assert decision.requests_remaining == 0


def test_keys_are_independent() -> None:
    window = InProcessWindow(clock=Clock())
    quota = Quota(requests_per_minute=1, tokens_per_minute=0)
    assert window.acquire_now("alice:chat", quota, 0, "a").allowed
    assert window.acquire_now("bob:chat", quota, 0, "b").allowed
    assert not window.acquire_now("alice:chat", quota, 0, "c").allowed


@pytest.mark.asyncio
async def test_token_reservation_is_settled_with_real_usage() -> None:
    clock = Clock()
    window = InProcessWindow(clock=clock)
    quota = Quota(requests_per_minute=0, tokens_per_minute=1000)
    first = window.acquire_now("k", quota, 600, "a")
    assert first.allowed
    assert first.tokens_remaining == 400
    assert not window.acquire_now("k", quota, 600, "b").allowed
    await window.settle("k", "a", 600, 100)  # the call used far less than reserved
    second = window.acquire_now("k", quota, 600, "c")
    assert second.allowed
    assert second.tokens_remaining == 300


def test_token_retry_after_waits_for_enough_tokens_to_leave() -> None:
    clock = Clock()
    window = InProcessWindow(clock=clock)
    quota = Quota(requests_per_minute=0, tokens_per_minute=100)
    window.acquire_now("k", quota, 40, "a")
    clock.now = 10
    window.acquire_now("k", quota, 40, "b")
    clock.now = 20
    refused = window.acquire_now("k", quota, 50, "c")
    assert refused.reason == "tokens"
    # 80 used + 50 wanted - 100 allowed = 30 must leave: the entry from t=0 leaves at t=60.
    assert refused.retry_after == pytest.approx(40)


def test_refused_requests_take_nothing() -> None:
    window = InProcessWindow(clock=Clock())
    quota = Quota(requests_per_minute=10, tokens_per_minute=100)
    assert window.acquire_now("k", quota, 90, "a").allowed
    refused = window.acquire_now("k", quota, 50, "b")
    assert not refused.allowed
    assert refused.requests_remaining == 9
    assert refused.tokens_remaining == 10


def test_a_fallback_step_is_charged_tokens_but_not_counted_as_a_request() -> None:
    window = InProcessWindow(clock=Clock())
    counted = Quota(requests_per_minute=2, tokens_per_minute=100)
    fallback = Quota(requests_per_minute=2, tokens_per_minute=100, count_request=False)
    assert window.acquire_now("k", counted, 10, "m0").allowed
    assert window.acquire_now("k", counted, 10, "m1").allowed
    # The window is full for new requests, but a fallback of one already counted passes...
    decision = window.acquire_now("k", fallback, 10, "m2")
    assert decision.allowed
    assert decision.tokens_remaining == 70
    # ...and is still held to the token budget.
    assert not window.acquire_now("k", fallback, 80, "m3").allowed
    assert not window.acquire_now("k", counted, 1, "m4").allowed


def _after_a_burst(clock: Clock) -> InProcessWindow:
    """A window whose key ``k`` admitted 1,000 requests of 10 tokens each at t=0."""
    window = InProcessWindow(clock=clock)
    for i in range(1000):
        window.acquire_now("k", Quota(0, 1_000_000), 10, f"old{i}")
    return window


def test_a_burst_a_minute_old_is_drained_a_bounded_amount_per_call() -> None:
    """As in Redis: at most 256 expired reservations leave per call; the request count is
    exact at once, the token budget is stricter until the rest has been drained."""
    clock = Clock()
    window = _after_a_burst(clock)
    clock.now = 61.0
    quota = Quota(requests_per_minute=5, tokens_per_minute=100_000)
    decisions = [window.acquire_now("k", quota, 10, f"new{i}") for i in range(4)]
    assert [d.requests_remaining for d in decisions] == [4, 3, 2, 1]
    waiting = [1000 - 256, 1000 - 512, 1000 - 768, 0]
    assert [d.tokens_remaining for d in decisions] == [
        100_000 - 10 * (left + i + 1) for i, left in enumerate(waiting)
    ]


def test_tokens_waiting_to_be_drained_never_refuse_a_call() -> None:
    clock = Clock()
    window = _after_a_burst(clock)
    clock.now = 61.0
    decision = window.acquire_now("k", Quota(0, 10_000), 5_000, "new")
    assert decision.allowed
    assert decision.tokens_remaining == 5_000


def test_the_tokens_reset_skips_reservations_waiting_to_be_drained() -> None:
    """As Redis' ``reset_of``: the reset is the oldest reservation still inside the window."""
    clock = Clock()
    window = _after_a_burst(clock)
    clock.now = 30.0
    window.acquire_now("k", Quota(0, 1_000_000), 10, "live")
    clock.now = 61.0
    decision = window.acquire_now("k", Quota(0, 1_000_000), 10, "new")
    assert decision.tokens_reset == pytest.approx(29.0)
