"""`mso rollout status` (the dict every engine returns): only what applies to the
strategy, steps numbered from 1 as in events, the current numbers of a held analysis, the
ways forward, and a user's pause that stops the step's clock."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any


from mso.controllers.rollouts import RolloutController, _status, analysis_needs
from mso.store.db import Store
from mso.store.records import Desired
from mso.strategies.state import Phase, RolloutState

from tests.controllers.test_rollouts import FakeHost

T0 = 1_700_000_000.0
CANARY: dict[str, Any] = {
    "strategy": "canary", "progress_deadline": 15.0,
    "steps": [{"set_weight": 20, "pause": None, "analysis": None},
              {"set_weight": None, "pause": None, "analysis": {"duration": 30.0}},
              {"set_weight": 50, "pause": None, "analysis": None},
              {"set_weight": None, "pause": {"duration": None}, "analysis": None}],
    "analysis": {"interval": 1.0, "min_samples": 50, "confidence": 0.99,
                 "max_error_rate_increase": 0.01, "max_latency_p99_increase": 0.25,
                 "providers": []}}
CANARY_ONLY = {"plan", "current_step", "step_left", "thresholds", "analysis"}


def canary_at_analysis(**changes: Any) -> RolloutState:
    state = RolloutState("web", "canary", 1, 2, started=T0, step=1, step_started=T0,
                         weight=20)
    return dataclasses.replace(state, **changes)


def test_a_rolling_update_shows_replicas_not_steps_weights_or_analysis() -> None:
    state = RolloutState("web", "rolling", 1, 2, started=T0, updated=1, wanted=3,
                         waiting_since=T0 + 4)
    out = _status(state, {"strategy": "rolling", "progress_deadline": 600.0}, T0 + 10)
    assert out["step"] is None and out["steps"] is None and out["weight"] is None
    assert not CANARY_ONLY & set(out)
    assert out["replicas"] == {"updated": 1, "wanted": 3}
    assert out["deadline_at"] == T0 + 604
    assert out["next"][0] == "`mso ps` and `mso logs web` show how the new replicas are doing"
    assert out["next"][1].startswith("if no more replicas become ready, the progress deadline")


def test_blue_green_shows_its_preview_and_the_previous_release_kept() -> None:
    spec = {"strategy": "blue_green", "preview_port": 8081, "keep_previous": 300.0}
    waiting = RolloutState("web", "blue_green", 1, 2, started=T0, phase=Phase.PAUSED,
                           reason="preview ready; `mso rollout promote` switches traffic")
    out = _status(waiting, spec, T0 + 5)
    assert not CANARY_ONLY & set(out) and out["step"] is None
    assert out["preview_port"] == 8081 and out["promoted_at"] is None
    assert out["next"][:2] == ["try release 2 on the preview port 8081",
                               "`mso rollout promote web` switches all traffic to release 2"]
    promoted = dataclasses.replace(waiting, phase=Phase.PROGRESSING, promoted_at=T0 + 10,
                                   weight=100)
    out = _status(promoted, spec, T0 + 20)
    assert out["previous_until"] == T0 + 310
    assert out["next"][0].startswith("`mso rollout abort web` switches traffic straight back")


def test_a_canary_numbers_its_steps_from_1_and_says_the_time_left() -> None:
    out = _status(canary_at_analysis(), CANARY, T0 + 18)
    assert (out["step"], out["steps"], out["weight"]) == (2, 4, 20)
    assert out["plan"] == ["weight 20%", "analysis 30s", "weight 50%", "pause until promoted"]
    assert out["current_step"] == "analysis 30s (12s left)" and out["step_left"] == 12.0
    assert out["deadline_at"] is None and out["next"] == []
    done = dataclasses.replace(canary_at_analysis(), step=4, phase=Phase.PROMOTED,
                               finished=T0 + 60)
    assert _status(done, CANARY, T0 + 61)["step"] == 4


def test_a_held_analysis_says_what_it_needs_and_the_ways_forward() -> None:
    numbers = {"verdict": "inconclusive", "stable": {"requests": 0}, "canary": {"requests": 3}}
    need = analysis_needs(numbers, 50)
    assert need == "canary has 3 of 50 requests needed, stable 0 of 50"
    held = canary_at_analysis(phase=Phase.INCONCLUSIVE, analysis=numbers,
                              reason=f"analysis inconclusive: {need}")
    out = _status(held, CANARY, T0 + 40)
    assert out["reason"] == f"analysis inconclusive: {need}"
    assert out["current_step"] == "analysis 30s (done; held: inconclusive)"
    assert out["deadline_at"] == T0 + 45
    ways = out["next"]
    assert "`x-mso-route: canary`" in ways[0]
    assert ways[1] == "`mso rollout promote web` skips the analysis and promotes release 2 now"
    assert ways[2] == "`mso rollout abort web` rolls back to release 1"
    assert ways[3].startswith("otherwise the progress deadline (15s) fails the rollout and "
                              "rolls it back at ") and ways[3].endswith("in 5s")
    enough = {"stable": {"requests": 60}, "canary": {"requests": 55}}
    assert analysis_needs(enough, 50) is None
    out = _status(dataclasses.replace(held, analysis=enough), CANARY, T0 + 40)
    assert "x-mso-route" not in " ".join(out["next"])


def test_a_paused_canary_shows_the_time_left_frozen_and_how_to_resume() -> None:
    paused = canary_at_analysis(phase=Phase.PAUSED, paused_by_user=True, paused_at=T0 + 10)
    for now in (T0 + 11, T0 + 500):
        out = _status(paused, CANARY, now)
        assert out["step_left"] == 20.0 and out["paused"] is True
        assert out["current_step"] == "analysis 30s (20s left, paused)"
        assert out["deadline_at"] is None
        assert out["next"][0] == "`mso rollout resume web` continues (the step has 20s left)"


def test_a_canary_at_an_indefinite_pause_says_promote_continues() -> None:
    state = canary_at_analysis(step=3, weight=50, phase=Phase.PAUSED)
    out = _status(state, CANARY, T0 + 5)
    assert out["step"] == 4 and out["current_step"] == "pause until promoted"
    assert out["next"][0] == "`mso rollout promote web` promotes release 2"


MODEL = {"ports": {"http": 8000}, "rollout": CANARY}


def test_pause_and_resume_commands_keep_the_steps_time_left(tmp_path: Path) -> None:
    clock = [T0]
    store = Store(tmp_path / "s.db")
    for n in (1, 2):
        store.add_release("web", f"h{n}", {"kind": "service", "model": MODEL}, {}, "t", "x")
    store.set_desired(Desired("web", "service", 2, 2, 2))
    controller = RolloutController(FakeHost(store), clock=lambda: clock[0])
    controller.begin("web", 1, 2)
    asyncio.run(controller.tick())  # weight 20%: the analysis starts at T0
    assert controller.status("web")["current_step"] == "analysis 30s (30s left)"
    clock[0] = T0 + 10
    controller.command("pause", "web")
    clock[0] = T0 + 100
    asyncio.run(controller.tick())
    status = controller.status("web")
    assert (status["phase"], status["step"], status["step_left"]) == ("Paused", 2, 20.0)
    resumed = controller.command("resume", "web")
    assert resumed["phase"] == "Progressing" and resumed["step_left"] == 20.0
    events = [e.message for e in store.events() if e.type.startswith("rollout.")]
    assert events[-2:] == ["paused by user", "resumed by user after a pause of 90.0s"]
    steps = [e.data["step"] for e in store.events() if e.type == "rollout.progressing"]
    assert steps[0] == 2  # "step 1: weight set to 20%": now at step 2
