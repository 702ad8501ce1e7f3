"""The pure rules: when a canary is judged worse, and when a traffic split counts as done."""

from __future__ import annotations

from typing import Any

import pytest

from nexus.release.analyze import RevisionStats, Thresholds, decide
from nexus.release.wait import check_isvc

T = Thresholds(max_error_ratio=0.02, max_p95_latency_ratio=1.5, min_requests=10)


def stats(requests: float, errors: float = 0, p95: float | None = 0.5) -> RevisionStats:
    return RevisionStats("r", requests, errors, p95, None)


@pytest.mark.parametrize(
    ("canary", "stable", "decision"),
    [
        (stats(100), stats(900), "promote"),
        (stats(100, errors=5), stats(900, errors=40), "promote"),  # no worse than stable
        (stats(100, errors=10), stats(900), "rollback"),
        (stats(5), stats(900), "rollback"),  # too little traffic to judge
        (stats(100, p95=2.0), stats(900, p95=1.0), "rollback"),
        (stats(100, p95=0.030), stats(900, p95=0.010), "promote"),  # below the latency floor
    ],
)
def test_decide(canary: RevisionStats, stable: RevisionStats, decision: str) -> None:
    assert decide(canary, stable, T)[0] == decision


def isvc(canary: int | None, traffic: list[tuple[str, int, bool]], ready: str = "True") -> Any:
    predictor = {} if canary is None else {"canaryTrafficPercent": canary}
    return {
        "metadata": {"generation": 2},
        "spec": {"predictor": predictor},
        "status": {
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": ready}],
            "components": {
                "predictor": {
                    "traffic": [
                        {"revisionName": r, "percent": p, "latestRevision": latest}
                        for r, p, latest in traffic
                    ]
                }
            },
        },
    }


def test_canary_done_only_with_the_split_asked() -> None:
    done, rollout = check_isvc(isvc(20, [("m-2", 20, True), ("m-1", 80, False)]), "canary", 20)
    assert done is None
    assert (rollout.latest_revision, rollout.stable_revision) == ("m-2", "m-1")
    # The controller has not split yet: the old revision still takes everything.
    assert check_isvc(isvc(20, [("m-1", 100, True)]), "canary", 20)[0] is not None
    assert check_isvc(isvc(20, [("m-2", 20, True), ("m-1", 80, False)], "False"), "canary", 20)[0]


def test_rollback_done_when_previous_takes_everything() -> None:
    assert check_isvc(isvc(0, [("m-2", 0, True), ("m-1", 100, False)]), "rollback", 0)[0] is None
    assert check_isvc(isvc(None, [("m-2", 100, True)]), "rollback", 0)[0] is not None
