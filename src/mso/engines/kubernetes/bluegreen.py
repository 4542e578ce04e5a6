"""Blue/green on Kubernetes: which Deployment runs which release, and where traffic goes.

The local engine promotes by relabelling running replicas (preview -> stable). On
Kubernetes the subset label is part of each Deployment's immutable selector, so the two
Deployments keep their names and the gateway's weights say which one serves:

| phase | `svc` (stable) | `svc-preview` | traffic |
|---|---|---|---|
| preview (not promoted) | old release | new release | `svc`; the preview port answers `svc-preview` alone |
| promoted, within `keep_previous` | old release (the *previous*) | new release | all on `svc-preview` |
| after `keep_previous` (hand-off) | rolls to the new release | new release | `svc-preview` until `svc` is rolled, then `svc`; `svc-preview` is deleted |
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
class Observed:
    """What the cluster shows of one service."""

    preview_release: int | None  # the `svc-preview` Deployment's release, if it exists
    # (release, ready) of each stable pod; terminating pods count, as not ready
    stable_pods: tuple[tuple[int, bool], ...]

    def stable_rolled(self, release: int, replicas: int) -> bool:
        return rolled(self.stable_pods, release, replicas)


def rolled(pods: tuple[tuple[int, bool], ...], release: int, replicas: int) -> bool:
    """Every pod ready and running `release`, as many as wanted."""
    return len(pods) >= replicas and all(r == release and ok for r, ok in pods)


@dataclass(frozen=True)
class Traffic:
    targets: list[SubsetTarget]
    weights: dict[str, int]
    preview_listener: bool = False  # serve the preview subset alone on `preview_port`
    handoff: bool = False  # a finished rollout still moving traffic back to `svc`


def plan(state: RolloutState | None, release: int, replicas: int,
         observed: Observed) -> Traffic | None:
    """Blue/green's say over one service, or None when it has none (plain targets apply).

    `state` is the service's active rollout (None if none is active), `release` its
    desired release.
    """
    if state is not None and state.strategy == "blue_green":
        both = [SubsetTarget("stable", state.from_release, replicas),
                SubsetTarget(PREVIEW, state.to_release, replicas)]
        if state.promoted_at is None:
            return Traffic(both, {"stable": 100, PREVIEW: 0}, preview_listener=True)
        return Traffic(both, {"stable": 0, PREVIEW: 100})
    if observed.preview_release == release and not observed.stable_rolled(release, replicas):
        return _handoff(release, replicas)
    return None


def _handoff(release: int, replicas: int) -> Traffic:
    """`svc-preview` serves `release` while `svc` rolls to it."""
    return Traffic([SubsetTarget("stable", release, replicas),
                    SubsetTarget(PREVIEW, release, replicas)],
                   {"stable": 0, PREVIEW: 100}, handoff=True)
