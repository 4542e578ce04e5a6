"""Replica reconciliation for one service: a pure plan from desired and observed state.

The plan covers scaling and the rolling replacement of replicas of an older release,
bounded by `max_surge` (how many replicas may exist above the desired count) and
`max_unavailable` (how many below it may be not ready). Replicas that are stopping still
count against the surge, so a slow drain can never push the process count over it.
Canary and blue/green subsets are planned by the rollout strategies, not here: this plan
only touches the subset it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ObservedReplica:
    id: str
    ordinal: int
    release: int
    ready: bool
    stopping: bool = False


@dataclass(frozen=True)
class StartReplica:
    ordinal: int
    release: int


@dataclass(frozen=True)
class StopReplica:
    replica_id: str
    reason: str


Action = StartReplica | StopReplica


@dataclass(frozen=True)
class RollingParams:
    strategy: Literal["rolling", "recreate"] = "rolling"
    max_surge: int | str = 1
    max_unavailable: int | str = 0


def resolve_budget(value: int | str, replicas: int, round_up: bool) -> int:
    """Turn `1` or `"25%"` into a replica count, rounding like Kubernetes does."""
    if isinstance(value, int):
        return value
    percent = float(value.rstrip("%")) / 100.0 * replicas
    return math.ceil(percent) if round_up else math.floor(percent)


def plan(target_release: int, replicas: int, observed: list[ObservedReplica],
         params: RollingParams = RollingParams(), may_start: bool = True) -> list[Action]:
    """Return the actions that move `observed` one step towards the desired state."""
    live = [r for r in observed if not r.stopping]
    new = [r for r in live if r.release == target_release]
    old = [r for r in live if r.release != target_release]
    used = {r.ordinal for r in observed}
    if params.strategy == "recreate" and any(r.stopping and r.release != target_release
                                             for r in observed):
        return []
    if not old:
        return _scale(target_release, replicas, new, used, may_start)
    if params.strategy == "recreate":
        return _recreate(target_release, replicas, observed, old, used, may_start)
    return _roll(target_release, replicas, observed, new, old, used, params, may_start)


def _free_ordinals(used: set[int], count: int) -> list[int]:
    found: list[int] = []
    ordinal = 1
    while len(found) < count:
        if ordinal not in used:
            found.append(ordinal)
        ordinal += 1
    return found


def _removal_order(reps: list[ObservedReplica]) -> list[ObservedReplica]:
    # Not-ready replicas first: removing them costs no capacity. Then the newest ordinals.
    return sorted(reps, key=lambda r: (r.ready, -r.ordinal))


def _scale(release: int, replicas: int, current: list[ObservedReplica], used: set[int],
           may_start: bool) -> list[Action]:
    if len(current) < replicas:
        if not may_start:
            return []
        return [StartReplica(o, release) for o in _free_ordinals(used, replicas - len(current))]
    extra = _removal_order(current)[: len(current) - replicas]
    return [StopReplica(r.id, "scaled down") for r in extra]


def _recreate(release: int, replicas: int, observed: list[ObservedReplica],
              old: list[ObservedReplica], used: set[int], may_start: bool) -> list[Action]:
    stops: list[Action] = [StopReplica(r.id, f"replaced by release {release} (recreate)")
                           for r in old]
    if stops or any(r.stopping for r in observed):
        return stops
    return _scale(release, replicas, [], used, may_start)


def _roll(release: int, replicas: int, observed: list[ObservedReplica],
          new: list[ObservedReplica], old: list[ObservedReplica], used: set[int],
          params: RollingParams, may_start: bool) -> list[Action]:
    surge = resolve_budget(params.max_surge, replicas, round_up=True)
    unavailable = resolve_budget(params.max_unavailable, replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # the spec rejects this; never deadlock if it slips through
    actions: list[Action] = []
    to_start = min(replicas - len(new), replicas + surge - len(observed))
    if to_start > 0 and may_start:
        actions += [StartReplica(o, release) for o in _free_ordinals(used, to_start)]
    if len(new) > replicas:
        actions += [StopReplica(r.id, "scaled down")
                    for r in _removal_order(new)[: len(new) - replicas]]
    ready = sum(1 for r in new + old if r.ready)
    min_ready = replicas - unavailable
    for r in _removal_order(old):
        if not r.ready:
            actions.append(StopReplica(r.id, f"replaced by release {release}"))
        elif ready - 1 >= min_ready:
            actions.append(StopReplica(r.id, f"replaced by release {release}"))
            ready -= 1
    return actions
