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


VLLM_TTFT = "vllm:time_to_first_token_seconds"


def test_a_vllm_canary_is_judged_on_vllms_time_to_first_token() -> None:
    def timed(revision: str, requests: float, ttft: float | None) -> RevisionStats:
        return RevisionStats(revision, requests, 0, 0.5, ttft)

    stable = timed("m-1", 900, 0.100)
    assert decide(timed("m-2", 100, 0.120), stable, T, ttft_series=VLLM_TTFT)[0] == "promote"
    decision, reasons = decide(timed("m-2", 100, 0.400), stable, T, ttft_series=VLLM_TTFT)
    assert (decision, reasons) == (
        "rollback",
        ("canary p95 TTFT 0.400s exceeds stable 0.100s x 1.5",),
    )
    # Requests without a TTFT sample: vLLM's series are not there to judge the canary by.
    decision, reasons = decide(timed("m-2", 100, None), stable, T, ttft_series=VLLM_TTFT)
    assert decision == "rollback"
    assert reasons == (
        f"canary m-2 answered 100 requests without error but {VLLM_TTFT} has no sample for "
        "it in the window",
    )
    # Only errors: no first token to time; the 5xx ratio judges it, and is the one reason.
    failing = RevisionStats("m-2", 100, 100, 0.5, None)
    decision, reasons = decide(failing, stable, T, ttft_series=VLLM_TTFT)
    assert decision == "rollback"
    assert len(reasons) == 1
    assert reasons[0].startswith("canary 5xx ratio 1.000")
    # A runtime without a TTFT series (Hugging Face) is judged without one.
    assert decide(timed("m-2", 100, None), timed("m-1", 900, None), T)[0] == "promote"


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
