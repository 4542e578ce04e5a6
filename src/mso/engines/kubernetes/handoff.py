"""Hand-offs on Kubernetes (pure): a second Deployment keeps serving while `svc` is rolled.

A promotion can leave the promoted release serving from a Deployment other than `svc`:
a canary promotion moves all traffic to `svc-canary` before `svc` is updated, and a
blue/green promotion serves from `svc-preview` for `keep_previous`. Two moments then
need `svc` rolled before traffic may return to it:

- `keep_previous` is over: `svc-preview` serves the new release until `svc` runs it,
  then `svc-preview` is deleted;
- a deploy cuts the promotion short: the new rollout starts *from the promoted release*
  (`RolloutController.begin`). Its plain targets would move traffic straight back to
  `svc`, which still runs the release the promotion replaced, and would reuse the
  serving Deployment for the new canary or preview. Instead that Deployment keeps
  serving until `svc` runs its target.

The signals need no memory of the old rollout, so a restarted controller resumes: a
second Deployment that runs the new rollout's `from_release` in full can only be a
promoted one (an unpromoted canary or preview runs the release that was being tried,
never the one it was compared against), and `svc-preview` running the desired release
with no rollout active is a finished blue/green one.
"""

from __future__ import annotations

from mso.controllers.rollouts import SubsetTarget
from mso.engines.kubernetes.bluegreen import PREVIEW, Traffic
from mso.strategies.state import RolloutState


def rolled(pods: tuple[tuple[int, bool], ...], release: int, replicas: int) -> bool:
    """Every pod ready and running `release`, as many as wanted. Terminating pods are
    listed as not ready: kube-proxy may still route to them."""
    return len(pods) >= replicas and all(r == release and ok for r, ok in pods)


def serving_elsewhere(state: RolloutState | None, targets: list[SubsetTarget],
                      others: dict[str, tuple[int | None, int]],
                      stable_pods: tuple[tuple[int, bool], ...]) -> Traffic | None:
    """Keep a second Deployment in front until `svc` is rolled; None when none must be
    (the rollout's own targets apply).

    `others` maps each non-stable subset to (its Deployment's release or None, ready pods).
    """
    stable = next(t for t in targets if t.subset == "stable")
    if rolled(stable_pods, stable.release, stable.replicas):
        return None
    if state is not None and state.from_release != state.to_release:
        for subset, (release, ready) in sorted(others.items()):
            if release == state.from_release and ready >= stable.replicas > 0:
                return _in_front(stable, subset, release)
    if state is None and others.get(PREVIEW, (None, 0))[0] == stable.release:
        return _in_front(stable, PREVIEW, stable.release)
    return None


def _in_front(stable: SubsetTarget, subset: str, release: int) -> Traffic:
    """`subset` keeps all traffic on `release` while `svc` rolls to `stable`."""
    return Traffic([stable, SubsetTarget(subset, release, stable.replicas)],
                   {"stable": 0, subset: 100}, handoff=True)
