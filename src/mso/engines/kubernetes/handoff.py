"""A deploy that cuts a promotion short, on Kubernetes (pure).

A promotion can leave the promoted release serving from a Deployment other than `svc`:
a canary promotion moves all traffic to `svc-canary` before `svc` is updated, and a
blue/green promotion serves from `svc-preview` for `keep_previous`. A deploy in that
window starts a new rollout *from the promoted release* (`RolloutController.begin`). Its
plain targets would move traffic straight back to `svc`, which still runs the release
the promotion replaced, and would reuse the serving Deployment for the new canary or
preview. Instead that Deployment keeps serving until `svc` runs its target.

The signal needs no memory of the old rollout: a second Deployment that runs the new
rollout's `from_release` in full can only be a promoted one. An unpromoted canary or
preview runs the release that was being tried, never the one it was compared against.
"""

from __future__ import annotations

from mso.controllers.rollouts import SubsetTarget
from mso.engines.kubernetes.bluegreen import Traffic, rolled
from mso.strategies.state import RolloutState


def serving_elsewhere(state: RolloutState | None, targets: list[SubsetTarget],
                      others: dict[str, tuple[int | None, int]],
                      stable_pods: tuple[tuple[int, bool], ...]) -> Traffic | None:
    """Keep a second Deployment that serves the promoted release in front until `svc` is
    rolled; None when there is none (the rollout's own targets apply).

    `others` maps each non-stable subset with a Deployment to (its release, ready pods).
    """
    if state is None or state.from_release == state.to_release:
        return None
    stable = next(t for t in targets if t.subset == "stable")
    if rolled(stable_pods, stable.release, stable.replicas):
        return None
    for subset, (release, ready) in sorted(others.items()):
        if release == state.from_release and ready >= stable.replicas > 0:
            return Traffic([stable, SubsetTarget(subset, release, stable.replicas)],
                           {"stable": 0, subset: 100}, handoff=True)
    return None
