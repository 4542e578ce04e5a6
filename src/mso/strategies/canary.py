"""Canary: pure step logic. Given the state, the steps, the time and the latest verdict,
return the next state. The controller acts on it (weights, replicas, events).

Rules, in order:
1. A failing verdict rolls back at any time, whatever the step (weight 0 at once).
2. Nothing advances until the canary replicas are READY; past the progress deadline the
   rollout fails (and rolls back).
3. `set_weight` applies at once; a timed `pause` waits; `pause: {}` waits for a promote;
   `analysis` completes only when its duration elapsed *and* the final verdict is pass.
   An inconclusive final verdict (too little data) holds the rollout in Inconclusive and
   re-evaluates on every tick: it never promotes on no data.
4. After the last step the canary is promoted: stable replicas roll to the new release.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mso.strategies.state import Phase, RolloutState


@dataclass(frozen=True)
class Tick:
    now: float
    ready: bool  # every wanted new-release replica is READY
    verdict: str | None  # "pass" | "fail" | "inconclusive" | None (no analysis yet)
    reason: str = ""
    progress_deadline: float = 600.0


@dataclass(frozen=True)
class Decision:
    state: RolloutState
    events: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.events)


def step_kind(step: dict[str, Any]) -> str:
    for kind in ("set_weight", "pause", "analysis"):
        if step.get(kind) is not None:
            return kind
    raise ValueError(f"empty rollout step: {step!r}")


def analysis_due(state: RolloutState, steps: list[dict[str, Any]], now: float) -> bool:
    """True when the current step is an analysis whose duration is over (or overdue)."""
    if not state.active or state.promoting or state.step >= len(steps):
        return False
    step = steps[state.step]
    if step_kind(step) != "analysis":
        return False
    duration = float((step["analysis"] or {}).get("duration") or 0.0)
    return state.step_started > 0 and now - state.step_started >= duration


def rollback(state: RolloutState, reason: str, now: float,
             phase: Phase = Phase.ROLLED_BACK) -> Decision:
    new = dataclasses.replace(state, phase=phase, weight=0, reason=reason, finished=now,
                              promoting=False)
    return Decision(new, (f"{phase.value}: {reason}",))


def advance(state: RolloutState, steps: list[dict[str, Any]], tick: Tick) -> Decision:
    if not state.active:
        return Decision(state)
    if tick.verdict == "fail":
        return rollback(state, f"analysis failed: {tick.reason}", tick.now)
    if state.promoting:
        return Decision(state)
    if state.paused_by_user:
        if state.phase != Phase.PAUSED:
            return Decision(dataclasses.replace(state, phase=Phase.PAUSED,
                                                reason="paused by user"), ("paused by user",))
        return Decision(state)
    if not tick.ready:
        if tick.now - state.started > tick.progress_deadline:
            return rollback(state, f"canary not ready within {tick.progress_deadline:g}s",
                            tick.now, Phase.FAILED)
        return Decision(state)
    return _walk(state, steps, tick)


def _walk(state: RolloutState, steps: list[dict[str, Any]], tick: Tick) -> Decision:
    s = state
    events: list[str] = []
    if s.step_started == 0.0:
        s = dataclasses.replace(s, step_started=tick.now)
    while True:
        if s.step >= len(steps):
            s = dataclasses.replace(s, promoting=True, phase=Phase.PROGRESSING,
                                    reason="all steps passed; promoting")
            events.append("all steps passed; promoting the canary")
            break
        step = steps[s.step]
        kind = step_kind(step)
        if kind == "set_weight":
            weight = int(step["set_weight"])
            s = dataclasses.replace(s, weight=weight, step=s.step + 1, step_started=tick.now,
                                    phase=Phase.PROGRESSING, reason=f"weight {weight}%")
            events.append(f"step {s.step}: weight set to {weight}%")
            continue
        elapsed = tick.now - s.step_started
        if kind == "pause":
            duration = (step["pause"] or {}).get("duration")
            if duration is None:
                if s.phase != Phase.PAUSED:
                    s = dataclasses.replace(s, phase=Phase.PAUSED,
                                            reason="paused until `mso rollout promote`")
                    events.append(f"step {s.step + 1}: paused until promoted")
                break
            if elapsed < float(duration):
                break
            s = dataclasses.replace(s, step=s.step + 1, step_started=tick.now,
                                    phase=Phase.PROGRESSING)
            events.append(f"step {s.step}: pause of {float(duration):g}s done")
            continue
        # analysis
        duration = float((step["analysis"] or {}).get("duration") or 0.0)
        if elapsed < duration:
            break
        if tick.verdict == "pass":
            s = dataclasses.replace(s, step=s.step + 1, step_started=tick.now,
                                    phase=Phase.PROGRESSING, reason="analysis passed")
            events.append(f"step {s.step}: analysis passed: {tick.reason}")
            continue
        if s.phase != Phase.INCONCLUSIVE:
            s = dataclasses.replace(s, phase=Phase.INCONCLUSIVE,
                                    reason=f"analysis inconclusive: {tick.reason}")
            events.append(f"step {s.step + 1}: analysis inconclusive, holding: {tick.reason}")
        break
    return Decision(s, tuple(events))


def promote(state: RolloutState, steps: list[dict[str, Any]], now: float) -> Decision:
    """`mso rollout promote`: past an indefinite pause, else promote fully."""
    if not state.active:
        return Decision(state)
    at_pause = (state.step < len(steps) and step_kind(steps[state.step]) == "pause"
                and (steps[state.step]["pause"] or {}).get("duration") is None)
    if at_pause and state.phase == Phase.PAUSED and not state.paused_by_user:
        new = dataclasses.replace(state, step=state.step + 1, step_started=now,
                                  phase=Phase.PROGRESSING, reason="promoted past pause")
        return Decision(new, (f"step {state.step + 1}: promoted past the pause by user",))
    new = dataclasses.replace(state, promoting=True, paused_by_user=False,
                              phase=Phase.PROGRESSING, reason="full promotion by user")
    return Decision(new, ("full promotion requested by user",))
