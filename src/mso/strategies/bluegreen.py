"""Blue/green: the new release runs in full on a preview address; promotion switches all
traffic at once; the previous release stays ready for `keep_previous` for an instant
rollback. Pure decisions only; the controller moves replicas and traffic.

The progress deadline bounds the wait for the preview replicas to become ready (from
when that wait began, not counting the user's pause: `canary.wait_for_replicas`); the
wait for `mso rollout promote` and `keep_previous` are planned waits and never fail.
"""

from __future__ import annotations

import dataclasses

from mso.strategies.canary import Decision, Tick, rollback, wait_for_replicas
from mso.strategies.state import Phase, RolloutState


def advance(state: RolloutState, tick: Tick, keep_previous: float) -> Decision:
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


def promote(state: RolloutState, now: float) -> Decision:
    if not state.active or state.promoted_at is not None:
        return Decision(state)
    new = dataclasses.replace(state, promoted_at=now, phase=Phase.PROGRESSING, weight=100,
                              paused_by_user=False, paused_at=None, waiting_since=None,
                              reason="traffic switched; previous release kept for rollback")
    return Decision(new, ("promoted: all traffic switched to the new release",))
