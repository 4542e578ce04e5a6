"""Blue/green on Kubernetes: which Deployment runs which release, and where traffic goes.

The local engine promotes by relabelling running replicas (preview -> stable). On
Kubernetes the subset label is part of each Deployment's immutable selector, so the two
Deployments keep their names and the gateway's weights say which one serves:

| phase | `svc` (stable) | `svc-preview` | traffic |
|---|---|---|---|
| preview (not promoted) | old release | new release | `svc`; the preview port answers `svc-preview` alone |
| promoted, within `keep_previous` | old release (the *previous*) | new release | all on `svc-preview` |
| after `keep_previous` (hand-off, `handoff.py`) | rolls to the new release | new release | `svc-preview` until `svc` is rolled, then `svc`; `svc-preview` is deleted |
| aborted / rolled back | old release | deleted | `svc` |
| a newer deploy within `keep_previous` | rolls to the promoted release | promoted release | `svc-preview` until `svc` is rolled (`handoff.py`); then the newer release's own rollout |

An abort within `keep_previous` is therefore one table push: `svc` never stopped running
the old release. The hand-off is decided from what the cluster shows (the preview
Deployment's release, the stable pods), so it resumes by itself after a controller restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from mso.controllers.rollouts import SubsetTarget
from mso.strategies.state import RolloutState

PREVIEW = "preview"


@dataclass(frozen=True)
class Traffic:
    targets: list[SubsetTarget]
    weights: dict[str, int]
    preview_listener: bool = False  # serve the preview subset alone on `preview_port`
    handoff: bool = False  # a second Deployment still serves while `svc` is rolled (handoff.py)


def plan(state: RolloutState | None, replicas: int) -> Traffic | None:
    """Blue/green's say over one service while its rollout is active, or None when it
    has none (plain targets apply; the hand-off after `keep_previous` is `handoff.py`).
    """
    if state is None or state.strategy != "blue_green":
        return None
    both = [SubsetTarget("stable", state.from_release, replicas),
            SubsetTarget(PREVIEW, state.to_release, replicas)]
    if state.promoted_at is None:
        return Traffic(both, {"stable": 100, PREVIEW: 0}, preview_listener=True)
    return Traffic(both, {"stable": 0, PREVIEW: 100})
