"""Blue/green: the new release runs in full on a preview address; promotion switches all
traffic at once; the previous release stays ready for `keep_previous` for an instant
rollback. Pure decisions only; the controller moves replicas and traffic.

The progress deadline bounds the wait for the preview replicas to become ready (from
when that wait began, not counting the user's pause: `canary.wait_for_replicas`); the
wait for `mso rollout promote` and `keep_previous` are planned waits and never fail.

With analysis (`analysis_for`: the preview is judged against the stable, fed by the
synthetic load of `rollout.analysis.load`), the preview, once ready, is analysed for that
many seconds before it waits for promotion: a fail at any time rolls back (the preview
is never promoted), a pass after the duration waits for `mso rollout promote`, and an
inconclusive analysis holds (phase Inconclusive) until `progress_deadline` past the
duration fails the rollout, like a canary's analysis step. `mso rollout promote` during
the analysis skips it.
"""

from __future__ import annotations

import dataclasses

from mso.strategies.canary import Decision, Tick, rollback, step_elapsed, wait_for_replicas
from mso.strategies.state import Phase, RolloutState


def advance(state: RolloutState, tick: Tick, keep_previous: float,
            analysis_for: float | None = None) -> Decision:
    if not state.active:
        return Decision(state)
    if tick.verdict == "fail":
        return rollback(state, f"analysis failed: {tick.reason}", tick.now)
    if state.promoted_at is None:
        if state.paused_by_user:
            return Decision(state)
        if not tick.ready:
            return wait_for_replicas(state, tick, "preview")
        if state.waiting_since is not None:
            state = dataclasses.replace(state, waiting_since=None)
        if analysis_for is not None and state.phase != Phase.PAUSED:
            return _analyse(state, tick, analysis_for)
        if state.phase != Phase.PAUSED:
            new = dataclasses.replace(state, phase=Phase.PAUSED,
                                      reason="preview ready; `mso rollout promote` switches traffic")
            return Decision(new, ("preview ready, waiting for promotion",))
        return Decision(state)
    if tick.now - state.promoted_at >= keep_previous:
        new = dataclasses.replace(state, phase=Phase.PROMOTED, finished=tick.now,
                                  reason="previous release retired")
        return Decision(new, (f"previous release retired after {keep_previous:g}s",))
    return Decision(state)


def _analyse(state: RolloutState, tick: Tick, duration: float) -> Decision:
    """The preview is ready and analysed: wait for the duration, then pass or hold."""
    if state.step_started <= 0.0:
        started = dataclasses.replace(state, step_started=tick.now,
                                      reason=f"analysing the preview for {duration:g}s")
        return Decision(started, (f"preview ready; analysing it for {duration:g}s",))
    elapsed = step_elapsed(state, tick.now)
    if elapsed < duration:
        return Decision(state)
    if tick.verdict == "pass":
        new = dataclasses.replace(state, phase=Phase.PAUSED, reason="preview passed analysis; "
                                  "`mso rollout promote` switches traffic")
        return Decision(new, (f"preview passed analysis, waiting for promotion: {tick.reason}",))
    need = tick.reason or "no analysis data yet"
    if elapsed - duration > tick.progress_deadline:
        return rollback(state, f"analysis inconclusive for {tick.progress_deadline:g}s past "
                        f"its duration (progress_deadline): {need}", tick.now, Phase.FAILED)
    reason = f"analysis inconclusive: {need}"
    if state.phase != Phase.INCONCLUSIVE:
        held = dataclasses.replace(state, phase=Phase.INCONCLUSIVE, reason=reason)
        return Decision(held, (f"preview analysis inconclusive, holding: {need}",))
    return Decision(dataclasses.replace(state, reason=reason))


def promote(state: RolloutState, now: float) -> Decision:
    if not state.active or state.promoted_at is not None:
        return Decision(state)
    new = dataclasses.replace(state, promoted_at=now, phase=Phase.PROGRESSING, weight=100,
                              paused_by_user=False, paused_at=None, waiting_since=None,
                              reason="traffic switched; previous release kept for rollback")
    return Decision(new, ("promoted: all traffic switched to the new release",))
