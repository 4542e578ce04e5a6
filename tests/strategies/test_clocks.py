"""The rollout strategies' clocks, as pure functions: the progress deadline (waiting for
replicas, an analysis held Inconclusive past its duration), the user's pause that stops
the step's clock, and the 1-based step numbers of events."""

from __future__ import annotations

import dataclasses
from typing import Any

from mso.strategies import bluegreen, canary, rolling
from mso.strategies.canary import Decision, Tick
from mso.strategies.state import Phase, RolloutState

STEPS: list[dict[str, Any]] = [{"set_weight": 20, "pause": None, "analysis": None},
                               {"set_weight": None, "pause": None, "analysis": {"duration": 30.0}},
                               {"set_weight": 50, "pause": None, "analysis": None},
                               {"set_weight": None, "pause": {"duration": None}, "analysis": None}]
NEED = "canary has 0 of 50 requests needed, stable 0 of 50"
T0 = 1000.0


def tick(now: float, verdict: str | None = "inconclusive", reason: str = NEED,
         ready: bool = True, deadline: float = 15.0) -> Tick:
    return Tick(now, ready, verdict, reason, deadline)


def at_analysis() -> RolloutState:
    """Weight 20% set at T0; the 30 s analysis (step 2) started at T0."""
    state = RolloutState("web", "canary", 1, 2, started=T0 - 5)
    decision = canary.advance(state, STEPS, tick(T0))
    assert decision.events == ("step 1: weight set to 20%",)
    assert (decision.state.step, decision.state.step_started) == (1, T0)
    return decision.state


def run(state: RolloutState, *ticks: Tick) -> Decision:
    decision = Decision(state)
    for t in ticks:
        decision = canary.advance(decision.state, STEPS, t)
    return decision


def test_steps_are_numbered_from_1_in_events_and_status() -> None:
    state = at_analysis()
    assert canary.step_number(state, STEPS) == 2
    held = run(state, tick(T0 + 30))
    assert held.events == (f"step 2: analysis inconclusive, holding: {NEED}",)
    passed = run(held.state, tick(T0 + 31, "pass", "fine"))
    assert passed.events[:2] == ("step 2: analysis passed: fine", "step 3: weight set to 50%")
    assert passed.events[2] == "step 4: paused until promoted"
    assert canary.step_number(passed.state, STEPS) == 4
    done = canary.promote(passed.state, STEPS, T0 + 40)
    assert canary.step_number(done.state, STEPS) == 4  # all done: the last step
    assert canary.step_number(done.state, []) is None


def test_a_held_analysis_fails_at_its_progress_deadline_and_rolls_back() -> None:
    state = at_analysis()
    held = run(state, tick(T0 + 29.9), tick(T0 + 30))
    assert held.state.phase == Phase.INCONCLUSIVE
    still = run(held.state, tick(T0 + 45))  # held exactly 15 s: not past the deadline
    assert still.state.phase == Phase.INCONCLUSIVE
    failed = run(still.state, tick(T0 + 45.5))
    assert failed.state.phase == Phase.FAILED and failed.state.weight == 0
    assert failed.state.reason == ("analysis inconclusive for 15s past its duration "
                                   f"(progress_deadline): {NEED}")
    assert failed.state.finished == T0 + 45.5
    assert failed.events == (f"Failed: {failed.state.reason}",)


def test_a_held_analysis_says_what_it_needs_now_not_when_it_began_holding() -> None:
    held = run(at_analysis(), tick(T0 + 30))
    newer = "canary has 38 of 50 requests needed, stable 154 of 50"
    again = run(held.state, tick(T0 + 31, reason=newer))
    assert again.state.reason == f"analysis inconclusive: {newer}"
    assert again.events == ()  # the hold began once; its numbers change silently


def test_no_analysis_data_at_all_still_says_so() -> None:
    held = run(at_analysis(), tick(T0 + 30, verdict=None, reason=""))
    assert held.state.reason == "analysis inconclusive: no analysis data yet"


def test_the_users_pause_does_not_count_against_the_deadline() -> None:
    held = run(at_analysis(), tick(T0 + 30))
    paused = canary.set_paused(held.state, True, T0 + 35)  # held 5 s so far
    assert paused.state.paused_at == T0 + 35 and paused.state.phase == Phase.PAUSED
    later = run(paused.state, tick(T0 + 500))
    assert later.state.active and later.state.phase == Phase.PAUSED
    resumed = canary.set_paused(later.state, False, T0 + 500)
    assert resumed.state.step_started == T0 + 465  # moved by the 465 s pause
    assert run(resumed.state, tick(T0 + 510)).state.phase == Phase.INCONCLUSIVE  # held 15 s
    assert run(resumed.state, tick(T0 + 510.5)).state.phase == Phase.FAILED


def test_pause_stops_the_analysis_clock_and_resume_continues_with_the_time_left() -> None:
    state = at_analysis()
    paused = canary.set_paused(state, True, T0 + 10)  # 20 s of the analysis left
    assert paused.events == ("paused by user",)
    during = run(paused.state, tick(T0 + 100, "pass", "fine"))
    assert during.state.step == 1 and during.state.phase == Phase.PAUSED
    assert not canary.analysis_due(during.state, STEPS, T0 + 100)
    assert canary.step_elapsed(during.state, T0 + 100) == 10
    resumed = canary.set_paused(during.state, False, T0 + 100)
    assert resumed.state.phase == Phase.PROGRESSING and resumed.state.paused_at is None
    assert resumed.events == ("resumed by user after a pause of 90.0s",)
    early = run(resumed.state, tick(T0 + 119.5, "pass", "fine"))
    assert early.state.step == 1, "the analysis passed before its 30 s had run"
    assert not canary.analysis_due(early.state, STEPS, T0 + 119.5)
    assert canary.analysis_due(early.state, STEPS, T0 + 120)
    done = run(early.state, tick(T0 + 120, "pass", "fine"))
    assert done.events[0] == "step 2: analysis passed: fine"


def test_a_timed_pause_step_does_not_advance_while_the_user_pauses() -> None:
    steps: list[dict[str, Any]] = [{"pause": {"duration": 10.0}}, {"set_weight": 50}]
    state = RolloutState("web", "canary", 1, 2, started=T0)
    state = canary.advance(state, steps, tick(T0)).state
    paused = canary.set_paused(state, True, T0 + 4).state
    assert canary.advance(paused, steps, tick(T0 + 60)).state.step == 0
    resumed = canary.set_paused(paused, False, T0 + 60).state
    assert canary.advance(resumed, steps, tick(T0 + 65.9)).state.step == 0
    assert canary.advance(resumed, steps, tick(T0 + 66)).state.weight == 50


def test_a_failing_verdict_during_the_users_pause_still_rolls_back() -> None:
    paused = canary.set_paused(at_analysis(), True, T0 + 3).state
    failed = canary.advance(paused, STEPS, tick(T0 + 4, "fail", "canary error rate 30%"))
    assert failed.state.phase == Phase.ROLLED_BACK and failed.state.weight == 0
    assert failed.state.reason == "analysis failed: canary error rate 30%"


def test_pausing_twice_or_resuming_what_is_not_paused_changes_nothing() -> None:
    state = at_analysis()
    assert canary.set_paused(state, False, T0 + 1) == Decision(state)
    paused = canary.set_paused(state, True, T0 + 1).state
    assert canary.set_paused(paused, True, T0 + 9) == Decision(paused)


def test_a_pause_stored_by_an_older_mso_resumes_without_moving_the_clock() -> None:
    old = dataclasses.replace(at_analysis(), paused_by_user=True, phase=Phase.PAUSED)
    resumed = canary.set_paused(old, False, T0 + 50)
    assert not resumed.state.paused_by_user and resumed.state.step_started == T0


def test_waiting_for_canary_replicas_counts_from_when_the_wait_began() -> None:
    # A long rollout (started an hour ago) whose canary stops being ready: the deadline
    # counts from then, not from the rollout's start.
    state = dataclasses.replace(at_analysis(), started=T0 - 3600)
    waiting = run(state, tick(T0 + 5, ready=False))
    assert waiting.state.active and waiting.state.waiting_since == T0 + 5
    assert run(waiting.state, tick(T0 + 20, ready=False)).state.active
    failed = run(waiting.state, tick(T0 + 20.5, ready=False))
    assert failed.state.phase == Phase.FAILED
    assert failed.state.reason == "canary not ready within 15s (progress_deadline)"
    ready = run(waiting.state, tick(T0 + 10))
    assert ready.state.waiting_since is None


def test_the_users_pause_does_not_count_while_waiting_for_replicas() -> None:
    waiting = run(at_analysis(), tick(T0 + 5, ready=False)).state  # waiting since T0+5
    paused = canary.set_paused(waiting, True, T0 + 15).state  # 10 s of waiting so far
    resumed = canary.set_paused(paused, False, T0 + 300).state
    assert resumed.waiting_since == T0 + 290
    assert run(resumed, tick(T0 + 305, ready=False)).state.active
    assert not run(resumed, tick(T0 + 305.5, ready=False)).state.active


def test_a_rolling_update_fails_only_after_the_deadline_without_progress() -> None:
    state = RolloutState("web", "rolling", 1, 2, started=T0)

    def step(s: RolloutState, now: float, updated: int) -> Decision:
        return rolling.advance(s, Tick(now, False, None, "", 15.0, updated=updated, wanted=3),
                               False)

    s = step(state, T0, 0).state
    s = step(s, T0 + 14, 1).state  # progress: the clock starts again
    s = step(s, T0 + 28, 2).state
    assert (s.updated, s.wanted, s.waiting_since) == (2, 3, T0 + 28)
    assert step(s, T0 + 43, 2).state.active
    failed = step(s, T0 + 43.5, 2).state
    assert failed.phase == Phase.FAILED
    assert failed.reason == ("no progress for 15s (progress_deadline): 2 of 3 replicas "
                             "updated and ready")
    done = rolling.advance(s, Tick(T0 + 30, True, None, "", 15.0, updated=3, wanted=3), True)
    assert done.state.phase == Phase.PROMOTED and done.state.updated == 3


def test_a_blue_green_preview_that_never_gets_ready_fails_unless_paused() -> None:
    state = RolloutState("web", "blue_green", 1, 2, started=T0)
    waiting = bluegreen.advance(state, tick(T0 + 1, ready=False), 300.0).state
    assert waiting.waiting_since == T0 + 1
    failed = bluegreen.advance(waiting, tick(T0 + 16.5, ready=False), 300.0).state
    assert failed.phase == Phase.FAILED
    assert failed.reason == "preview not ready within 15s (progress_deadline)"
    paused = canary.set_paused(waiting, True, T0 + 2).state
    assert bluegreen.advance(paused, tick(T0 + 100, ready=False), 300.0).state.active
    ready = bluegreen.advance(waiting, tick(T0 + 5), 300.0)
    assert ready.state.phase == Phase.PAUSED and ready.state.waiting_since is None


def test_a_state_stored_by_an_older_mso_still_loads() -> None:
    old = {"service": "web", "strategy": "canary", "from_release": 1, "to_release": 2,
           "started": T0, "phase": "Paused", "step": 1, "step_started": T0,
           "weight": 20, "promoting": False, "promoted_at": None, "paused_by_user": True,
           "reason": "paused by user", "analysis": {}, "finished": None,
           "from_a_newer_mso": 1}
    state = RolloutState.from_json(old)
    assert state.paused_at is None and state.waiting_since is None
    assert RolloutState.from_json(state.to_json()) == state
