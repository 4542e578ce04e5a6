"""Blue/green with analysis (`analysis.load`): the pure decisions of mso.strategies.bluegreen."""

from __future__ import annotations

from mso.strategies import bluegreen
from mso.strategies.canary import Tick
from mso.strategies.state import Phase, RolloutState

KEEP = 300.0
DURATION = 10.0


def bg() -> RolloutState:
    return RolloutState("web", "blue_green", 1, 2, started=0.0)


def step(state: RolloutState, now: float, verdict: str | None, ready: bool = True,
         reason: str = "r", deadline: float = 30.0) -> RolloutState:
    return bluegreen.advance(state, Tick(now, ready, verdict, reason, deadline), KEEP,
                             DURATION).state


def test_a_ready_preview_is_analysed_for_the_duration_then_waits_for_promotion() -> None:
    s = step(bg(), 1.0, "inconclusive")
    assert s.step_started == 1.0 and s.phase == Phase.PROGRESSING
    s = step(s, 5.0, "inconclusive")
    assert s.phase == Phase.PROGRESSING  # still within the duration
    s = step(s, 11.0, "pass", reason="no regression")
    assert s.phase == Phase.PAUSED and s.reason.startswith("preview passed analysis")
    assert s.promoted_at is None  # promotion stays the user's


def test_a_failing_preview_is_rolled_back_at_once_never_promoted() -> None:
    s = step(bg(), 1.0, "inconclusive")
    decision = bluegreen.advance(s, Tick(2.0, True, "fail", "canary error rate 100%"), KEEP,
                                 DURATION)
    assert decision.state.phase == Phase.ROLLED_BACK and decision.state.promoted_at is None
    assert decision.state.reason == "analysis failed: canary error rate 100%"


def test_an_inconclusive_preview_holds_then_fails_at_the_progress_deadline() -> None:
    s = step(bg(), 1.0, "inconclusive")
    s = step(s, 12.0, "inconclusive", reason="canary has 3 of 50 requests needed")
    assert s.phase == Phase.INCONCLUSIVE and "3 of 50" in s.reason
    s = step(s, 30.0, "inconclusive", reason="canary has 9 of 50 requests needed")
    assert s.phase == Phase.INCONCLUSIVE and "9 of 50" in s.reason  # the current numbers
    s = step(s, 42.0, "inconclusive")
    assert s.phase == Phase.FAILED and "progress_deadline" in s.reason


def test_without_analysis_nothing_changes() -> None:
    s = bluegreen.advance(bg(), Tick(1.0, True, None), KEEP).state
    assert s.phase == Phase.PAUSED and s.step_started == 0.0


def test_promote_during_the_analysis_skips_it() -> None:
    s = step(bg(), 1.0, "inconclusive")
    promoted = bluegreen.promote(s, 2.0).state
    assert promoted.promoted_at == 2.0
    assert step(promoted, 3.0, None).phase == Phase.PROGRESSING


def test_status_of_a_held_preview_says_the_ways_forward_and_the_deadline() -> None:
    from mso.controllers.rollouts import _status
    spec = {"strategy": "blue_green", "progress_deadline": 30.0,
            "analysis": {"duration": DURATION, "load": {"rate": 10}}}
    s = step(step(bg(), 1.0, "inconclusive"), 12.0, "inconclusive")
    shown = _status(s, spec, 12.0)
    assert shown["deadline_at"] == 1.0 + DURATION + 30.0
    assert any("skips the analysis" in line for line in shown["next"]), shown["next"]


def test_load_header_values_are_not_shown_in_status() -> None:
    from mso.controllers.rollouts import _status
    spec = {"strategy": "canary", "steps": [{"set_weight": 50}],
            "analysis": {"load": {"rate": 10, "headers": {"authorization": "Bearer tok"}}}}
    state = RolloutState("web", "canary", 1, 2, started=0.0)
    shown = _status(state, spec, 1.0)
    assert shown["thresholds"]["load"]["headers"] == {"authorization": "***"}
