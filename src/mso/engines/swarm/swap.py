"""Blue/green on Swarm: promotion and rollback switch which Swarm service is `stable` (pure).

Before promotion the main service runs the old release (`stable`) and the second service
runs the new one in full (`preview`, answered alone on the preview port). Promotion must
be an instant switch, and the old release must stay running for `keep_previous` so that
an abort is an instant switch back. Moving the new release into the main service at
promotion would restart both services' tasks, so instead the two services swap subsets:
the main service keeps the old release as `previous` (weight 0) and the second service
serves `stable`. Only service labels change, never a task template, so no task restarts.

When the rollout ends the swap is undone:

- promoted (the new release stays): the second service, relabelled as a stand-in,
  carries all traffic while the main service is drained and updated to the new release
  (the ordinary handoff, `plan.py`, from its `shift` phase); then the second is retired;
- aborted (the old release comes back): the main service is `stable` again at once,
  and the second service is relabelled `previous` (weight 0), drained and removed.

The role -> subset mapping is part of the plan, and the gateway table is built from it,
so a swap reaches the gateway in one table, whatever the labels said a moment before.
"""

from __future__ import annotations

from dataclasses import dataclass

from mso.engines.swarm.observe import ServiceObs
from mso.engines.swarm.plan import Action, Ensure, Plan, Progress, Want


@dataclass(frozen=True)
class Swap:
    """What a promoted blue/green rollout wants while the previous release is kept."""

    main: Want  # the previous release, in the main service, subset "previous"
    second: Want  # the new release, in the second service, subset "stable"


def _runs(obs: ServiceObs | None, want: Want) -> bool:
    return obs is not None and obs.deploy_hash == want.deploy_hash


def _labelled(obs: ServiceObs, want: Want) -> bool:
    return obs.replicas == want.replicas and obs.subset == want.subset


def can_swap(swap: Swap, main: ServiceObs | None, other: ServiceObs | None,
             progress: Progress) -> bool:
    """Swapped already, or both releases run where the swap wants them and the new one is
    fully ready. Otherwise (a promotion before the preview was ready) the ordinary handoff
    moves the new release into the main service instead."""
    if not (_runs(main, swap.main) and _runs(other, swap.second)):
        return False
    assert other is not None
    return progress.swapped or other.settled_on(swap.second.release, swap.second.replicas)


def swapped(swap: Swap, weights: dict[str, int], main: ServiceObs,
            other: ServiceObs) -> Plan:
    """Hold the swap: relabel (or rescale) whichever service does not match it yet."""
    actions: list[Action] = []
    if not _labelled(main, swap.main):
        actions.append(Ensure("main", swap.main))
    if not _labelled(other, swap.second):
        actions.append(Ensure("second", swap.second))
    note = "swapping: the second service serves stable" if actions else ""
    return Plan(actions, weights, Progress(swapped=True), note,
                {"main": swap.main.subset, "second": swap.second.subset})


def unswap(stable: Want, standin: Want, main: ServiceObs | None,
           other: ServiceObs | None) -> Plan:
    """The rollout no longer wants the swap: give the main service back its `stable`
    role in one table, then let the ordinary plan finish the job."""
    if other is not None and other.deploy_hash == standin.deploy_hash:
        # The second service runs the release that stays: it keeps all traffic, as the
        # stand-in of a handoff whose main service is next drained and updated.
        return Plan([Ensure("second", standin)], {"stable": 0, standin.subset: 100},
                    Progress("shift", stable.deploy_hash),
                    "blue/green done: handing the new release back to the main service",
                    {"main": "stable", "second": standin.subset})
    actions: list[Action] = []
    if main is not None:
        actions.append(Ensure("main", Want(main.release, main.replicas, "stable",
                                           main.deploy_hash)))
    if other is not None:
        actions.append(Ensure("second", Want(other.release, other.replicas, "previous",
                                             other.deploy_hash)))
    return Plan(actions, {"stable": 100, "previous": 0}, Progress(),
                "blue/green rolled back: the main service serves stable again",
                {"main": "stable", "second": "previous"})


def plan_swap(swap: Swap | None, stable: Want, standin: Want, weights: dict[str, int],
              main: ServiceObs | None, other: ServiceObs | None,
              progress: Progress) -> Plan | None:
    """The plan while a swap is wanted or still in place; None: the ordinary plan applies."""
    if swap is not None and main is not None and other is not None \
            and can_swap(swap, main, other, progress):
        return swapped(swap, weights, main, other)
    if progress.swapped:
        return unswap(stable, standin, main, other)
    return None
