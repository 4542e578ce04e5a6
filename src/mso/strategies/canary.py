"""Canary: pure step logic. Given the state, the steps, the time and the latest verdict,
return the next state. The controller acts on it (weights, replicas, events).

Rules, in order:
1. A failing verdict rolls back at any time, whatever the step (weight 0 at once), even
   while the user has paused the rollout: safety first.
2. While the user has paused the rollout nothing advances and the step's clock stands
   still (see "Clocks" below).
3. Nothing advances until the canary replicas are READY; waiting for them longer than the
   progress deadline fails the rollout (and rolls it back).
4. `set_weight` applies at once; a timed `pause` waits; `pause: {}` waits for a promote;
   `analysis` completes only when its duration elapsed *and* the final verdict is pass.
   An inconclusive final verdict (too little data) holds the rollout in Inconclusive and
   re-evaluates on every tick: it never promotes on no data. The reason is rewritten on
   every tick with the current numbers. Held past its duration for longer than the
   progress deadline, the rollout fails (and rolls back).
5. After the last step the canary is promoted: stable replicas roll to the new release.

Clocks. `progress_deadline` means what Kubernetes' progressDeadlineSeconds means: the
longest a rollout may go without progress *that it waits for by itself*: replicas not
becoming ready (`waiting_since`), an analysis held Inconclusive after its duration ended.
Planned waits (a timed `pause`, `pause: {}`) and the user's pause never count. A user's
pause stops the step's clock: `paused_at` records when it began, elapsed time is measured
up to it, and `resume` shifts `step_started` and `waiting_since` forward by the pause's
length, so the step continues with the time it had left.

Step numbers. `state.step` is the index of the current step (0-based, `len(steps)` once
all are done); people see 1-based numbers everywhere: events (`step 2: ...`), `mso
rollout status` and its JSON (`step_number`).
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
    updated: int = 0  # rolling/recreate: new-release replicas READY
    wanted: int = 0  # rolling/recreate: replicas wanted


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


def step_duration(step: dict[str, Any]) -> float | None:
    """Seconds a pause or analysis step lasts; None for `pause: {}` and `set_weight`."""
    kind = step_kind(step)
    if kind == "set_weight":
        return None
    value = (step[kind] or {}).get("duration")
    return None if value is None else float(value)


def step_number(state: RolloutState, steps: list[dict[str, Any]]) -> int | None:
    """The 1-based number of the current step (the last one once all are done), as
    events and `mso rollout status` show it; None without steps."""
    if not steps:
        return None
    return min(state.step + 1, len(steps))


def step_elapsed(state: RolloutState, now: float) -> float:
    """Time spent in the current step, not counting the user's pause in progress."""
    if state.step_started <= 0.0:
        return 0.0
    until = state.paused_at if state.paused_at is not None else now
    return max(0.0, until - state.step_started)


def analysis_due(state: RolloutState, steps: list[dict[str, Any]], now: float) -> bool:
    """True when the current step is an analysis whose duration is over (or overdue)."""
    if not state.active or state.promoting or state.step >= len(steps):
        return False
    step = steps[state.step]
    if step_kind(step) != "analysis":
        return False
    duration = step_duration(step) or 0.0
    return state.step_started > 0 and step_elapsed(state, now) >= duration


def rollback(state: RolloutState, reason: str, now: float,
             phase: Phase = Phase.ROLLED_BACK) -> Decision:
    new = dataclasses.replace(state, phase=phase, weight=0, reason=reason, finished=now,
                              promoting=False)
    return Decision(new, (f"{phase.value}: {reason}",))


def wait_for_replicas(state: RolloutState, tick: Tick, what: str) -> Decision:
    """The rollout waits for `what` to become ready: start the deadline's clock, or fail
    (and roll back) once the wait has lasted longer than the progress deadline."""
    since = state.waiting_since if state.waiting_since is not None else tick.now
    if tick.now - since > tick.progress_deadline:
        return rollback(state, f"{what} not ready within {tick.progress_deadline:g}s "
                        "(progress_deadline)", tick.now, Phase.FAILED)
    if state.waiting_since is None:
        return Decision(dataclasses.replace(state, waiting_since=tick.now))
    return Decision(state)


def set_paused(state: RolloutState, paused: bool, now: float) -> Decision:
    """`mso rollout pause` / `resume`, for every strategy.

    Pausing records when the pause began; resuming moves the step's start and the
    replica wait forward by the pause's length, so neither a timed pause, an analysis
    duration nor the progress deadline counts the time the user held the rollout.
    Pausing a paused rollout, or resuming one the user did not pause, changes nothing.
    """
    if not state.active or paused == state.paused_by_user:
        return Decision(state)
    if paused:
        new = dataclasses.replace(state, paused_by_user=True, paused_at=now,
                                  phase=Phase.PAUSED, reason="paused by user")
        return Decision(new, ("paused by user",))
    if state.paused_at is None:  # paused by an mso that did not record when
        new = dataclasses.replace(state, paused_by_user=False, phase=Phase.PROGRESSING,
                                  reason="resumed by user")
        return Decision(new, ("resumed by user",))
    paused_at = state.paused_at

    def shifted(start: float) -> float:
        """`start` moved so that only the time before the pause counts (a clock started
        during the pause starts again now)."""
        return now - max(0.0, paused_at - start)

    new = dataclasses.replace(
        state, paused_by_user=False, paused_at=None, phase=Phase.PROGRESSING,
        reason="resumed by user",
        step_started=shifted(state.step_started) if state.step_started > 0 else 0.0,
        waiting_since=None if state.waiting_since is None else shifted(state.waiting_since))
    return Decision(new, (f"resumed by user after a pause of {max(0.0, now - paused_at):.1f}s",))


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
        return wait_for_replicas(state, tick, "canary")
    if state.waiting_since is not None:
        state = dataclasses.replace(state, waiting_since=None)
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
        number = s.step + 1
        if kind == "set_weight":
            weight = int(step["set_weight"])
            s = dataclasses.replace(s, weight=weight, step=number, step_started=tick.now,
                                    phase=Phase.PROGRESSING, reason=f"weight {weight}%")
            events.append(f"step {number}: weight set to {weight}%")
            continue
        elapsed = step_elapsed(s, tick.now)
        duration = step_duration(step)
        if kind == "pause":
            if duration is None:
                if s.phase != Phase.PAUSED:
                    s = dataclasses.replace(s, phase=Phase.PAUSED,
                                            reason="paused until `mso rollout promote`")
                    events.append(f"step {number}: paused until promoted")
                break
            if elapsed < duration:
                break
            s = dataclasses.replace(s, step=number, step_started=tick.now,
                                    phase=Phase.PROGRESSING, reason=f"pause of {duration:g}s done")
            events.append(f"step {number}: pause of {duration:g}s done")
            continue
        # analysis
        duration = duration or 0.0
        if elapsed < duration:
            break
        if tick.verdict == "pass":
            s = dataclasses.replace(s, step=number, step_started=tick.now,
                                    phase=Phase.PROGRESSING, reason="analysis passed")
            events.append(f"step {number}: analysis passed: {tick.reason}")
            continue
        need = tick.reason or "no analysis data yet"
        held = elapsed - duration
        if held > tick.progress_deadline:
            failed = rollback(s, f"analysis inconclusive for {tick.progress_deadline:g}s past "
                              f"its duration (progress_deadline): {need}", tick.now,
                              Phase.FAILED)
            return Decision(failed.state, (*events, *failed.events))
        reason = f"analysis inconclusive: {need}"
        if s.phase != Phase.INCONCLUSIVE:
            s = dataclasses.replace(s, phase=Phase.INCONCLUSIVE, reason=reason)
            events.append(f"step {number}: analysis inconclusive, holding: {need}")
        elif s.reason != reason:
            # The current numbers, not the ones of the tick that started the hold.
            s = dataclasses.replace(s, reason=reason)
        break
    return Decision(s, tuple(events))


def promote(state: RolloutState, steps: list[dict[str, Any]], now: float) -> Decision:
    """`mso rollout promote`: past an indefinite pause, else promote fully."""
    if not state.active:
        return Decision(state)
    at_pause = (state.step < len(steps) and step_kind(steps[state.step]) == "pause"
                and step_duration(steps[state.step]) is None)
    if at_pause and state.phase == Phase.PAUSED and not state.paused_by_user:
        new = dataclasses.replace(state, step=state.step + 1, step_started=now,
                                  phase=Phase.PROGRESSING, reason="promoted past pause")
        return Decision(new, (f"step {state.step + 1}: promoted past the pause by user",))
    new = dataclasses.replace(state, promoting=True, paused_by_user=False, paused_at=None,
                              waiting_since=None, phase=Phase.PROGRESSING,
                              reason="full promotion by user")
    return Decision(new, ("full promotion requested by user",))
