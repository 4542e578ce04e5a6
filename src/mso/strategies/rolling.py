"""Rolling (and recreate): the replica plan does the replacing; this decides when the
update is done, and fails it (to be rolled back) past its progress deadline.

Progress is what Kubernetes counts for a Deployment: one more new-release replica READY.
The deadline runs from the last progress (or from the first tick), so a long update that
keeps moving never fails, and one that stops moving fails `progress_deadline` after its
last step forward. The user's pause does not count (`canary.set_paused` shifts
`waiting_since`); note that the replica plan itself does not pause a rolling update.
"""

from __future__ import annotations

import dataclasses

from mso.strategies.canary import Decision, Tick, rollback
from mso.strategies.state import Phase, RolloutState


def advance(state: RolloutState, tick: Tick, complete: bool) -> Decision:
    """`complete`: every replica runs the new release, READY, and no old one is left.
    `tick.updated`/`tick.wanted`: new-release replicas READY so far, and wanted."""
    if not state.active:
        return Decision(state)
    if complete:
        new = dataclasses.replace(state, phase=Phase.PROMOTED, finished=tick.now, weight=100,
                                  updated=max(tick.updated, tick.wanted), wanted=tick.wanted,
                                  waiting_since=None, reason="all replicas updated")
        return Decision(new, ("all replicas updated",))
    progressed = tick.updated > state.updated or state.waiting_since is None
    s = dataclasses.replace(state, updated=tick.updated, wanted=tick.wanted,
                            waiting_since=tick.now if progressed else state.waiting_since)
    if state.paused_by_user:
        return Decision(s)
    since = s.waiting_since if s.waiting_since is not None else tick.now
    if tick.now - since > tick.progress_deadline:
        return rollback(s, f"no progress for {tick.progress_deadline:g}s (progress_deadline): "
                        f"{tick.updated} of {tick.wanted} replicas updated and ready"
                        f"{'; ' + tick.reason if tick.reason else ''}", tick.now, Phase.FAILED)
    return Decision(s)
