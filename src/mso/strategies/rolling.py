"""Rolling (and recreate): the replica plan does the replacing; this decides when the
update is done, and fails it (to be rolled back) past its progress deadline."""

from __future__ import annotations

import dataclasses

from mso.strategies.canary import Decision, Tick, rollback
from mso.strategies.state import Phase, RolloutState


def advance(state: RolloutState, tick: Tick, complete: bool) -> Decision:
    """`complete`: every replica runs the new release, READY, and no old one is left."""
    if not state.active:
        return Decision(state)
    if complete:
        new = dataclasses.replace(state, phase=Phase.PROMOTED, finished=tick.now, weight=100,
                                  reason="all replicas updated")
        return Decision(new, ("all replicas updated",))
    if tick.now - state.started > tick.progress_deadline:
        return rollback(state, f"no progress within {tick.progress_deadline:g}s: "
                        f"{tick.reason or 'new replicas not ready'}", tick.now, Phase.FAILED)
    return Decision(state)
