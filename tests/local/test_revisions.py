"""Knative's revision and traffic rules, stated on the pure functions the controller uses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from nexus.local.revisions import (
    RevisionState,
    TrafficTarget,
    canary_percent,
    desired_traffic,
    from_json,
    live,
    observe,
    route,
    to_json,
)

V1 = {"containers": [{"env": [{"name": "STORAGE_URI", "value": "hf://org/v1"}]}]}
V2 = {"containers": [{"env": [{"name": "STORAGE_URI", "value": "hf://org/v2"}]}]}
V3 = {"containers": [{"env": [{"name": "STORAGE_URI", "value": "hf://org/v3"}]}]}


def everything_ready(_: str) -> bool:
    return True


def nothing_ready(_: str) -> bool:
    return False


def step(
    state: RevisionState,
    predictor: dict[str, object],
    ready: Callable[[str], bool] = everything_ready,
) -> tuple[RevisionState, tuple[TrafficTarget, ...]]:
    state = observe(state, "llama-8b", predictor)
    desired = desired_traffic(state, canary_percent(predictor))
    return route(state, desired, ready), desired


def split(state: RevisionState) -> dict[str, int]:
    return {t.revision.rsplit("-", 1)[1]: t.percent for t in state.traffic}


def rolled_out() -> RevisionState:
    state, _ = step(RevisionState(), V1)
    return state


def test_first_revision_takes_all_traffic_even_with_a_canary_percent() -> None:
    state, _ = step(RevisionState(), {**V1, "canaryTrafficPercent": 20})
    assert [r.name for r in state.revisions] == ["llama-8b-predictor-00001"]
    assert split(state) == {"00001": 100}
    assert state.latest_rolled_out == "llama-8b-predictor-00001"
    assert state.previous_rolled_out is None


def test_changing_only_the_canary_percent_makes_no_revision() -> None:
    state, _ = step(rolled_out(), {**V1, "canaryTrafficPercent": 30})
    assert len(state.revisions) == 1
    assert split(state) == {"00001": 100}


def test_a_new_spec_with_a_canary_splits_latest_and_previous() -> None:
    state, _ = step(rolled_out(), {**V2, "canaryTrafficPercent": 20})
    assert split(state) == {"00002": 20, "00001": 80}
    tags = {t.revision[-5:]: (t.tag, t.latest) for t in state.traffic}
    assert tags == {"00002": ("latest", True), "00001": ("prev", False)}
    assert state.latest_rolled_out == "llama-8b-predictor-00001", "a canary is not rolled out"


def test_traffic_waits_until_the_new_revision_is_ready() -> None:
    state, desired = step(rolled_out(), {**V2, "canaryTrafficPercent": 20}, ready=nothing_ready)
    assert split(state) == {"00001": 100}
    assert live(state, desired) == ["llama-8b-predictor-00001", "llama-8b-predictor-00002"]


def test_removing_the_field_promotes_and_retires_the_previous_revision() -> None:
    state, _ = step(rolled_out(), {**V2, "canaryTrafficPercent": 20})
    state, desired = step(state, V2)
    assert split(state) == {"00002": 100}
    assert state.latest_rolled_out == "llama-8b-predictor-00002"
    assert state.previous_rolled_out == "llama-8b-predictor-00001"
    assert live(state, desired) == ["llama-8b-predictor-00002"]


def test_zero_rolls_back_and_stops_the_failed_latest() -> None:
    state, _ = step(rolled_out(), {**V2, "canaryTrafficPercent": 20})
    state, desired = step(state, {**V2, "canaryTrafficPercent": 0})
    assert split(state) == {"00002": 0, "00001": 100}
    assert state.latest_rolled_out == "llama-8b-predictor-00001"
    assert live(state, desired) == ["llama-8b-predictor-00001"]


def test_a_new_canary_during_a_canary_splits_against_the_rolled_out_revision() -> None:
    state, _ = step(rolled_out(), {**V2, "canaryTrafficPercent": 20})
    state, desired = step(state, {**V3, "canaryTrafficPercent": 10})
    assert split(state) == {"00003": 10, "00001": 90}
    assert "llama-8b-predictor-00002" not in live(state, desired)


def test_latest_ready_revision_follows_readiness() -> None:
    state, _ = step(rolled_out(), {**V2, "canaryTrafficPercent": 20}, ready=nothing_ready)
    assert state.latest_ready == "llama-8b-predictor-00001", "00002 is not ready yet"
    state, _ = step(state, {**V2, "canaryTrafficPercent": 20})
    assert state.latest_ready == "llama-8b-predictor-00002"


@pytest.mark.parametrize("bad", [-1, 101, "20", True, 2.5])
def test_canary_percent_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match="canaryTrafficPercent"):
        canary_percent({"canaryTrafficPercent": bad})


def test_state_survives_a_json_round_trip() -> None:
    state, _ = step(rolled_out(), {**V2, "canaryTrafficPercent": 20})
    assert from_json(to_json(state)) == state
    assert from_json(to_json(state)).traffic[0] == TrafficTarget(
        "llama-8b-predictor-00002", 20, latest=True, tag="latest"
    )


def test_with_tag_routing_the_latest_runs_at_zero_without_traffic() -> None:
    state, _ = step(rolled_out(), {**V2, "canaryTrafficPercent": 0})
    state, desired = step(state, {**V2, "canaryTrafficPercent": 0})
    assert split(state) == {"00002": 0, "00001": 100}
    assert live(state, desired, tag_routing=True) == [
        "llama-8b-predictor-00001",
        "llama-8b-predictor-00002",
    ]
    assert live(state, desired) == ["llama-8b-predictor-00001"]
