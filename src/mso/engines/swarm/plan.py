"""Per-service reconcile plan for Swarm (pure): which Docker services to change, and weights.

Each mso service has at most two Swarm services: the main one (subset `stable`) and a
second one that hosts whatever else the rollout wants (a canary, a blue/green preview or
previous version) or a stand-in during a handoff.

Swarm's own rolling update drops requests (moby#30321), so the main service is never
updated while it gets traffic. A new release reaches it through a **handoff**:

1. `standin`: the second service runs the new release with the full replica count (for a
   canary promotion it already runs it and is only scaled up);
2. `shift`: the gateway sends every request to the second service (stable weight 0);
3. `drain`: the gateway drains the main service's endpoints, then Swarm updates it;
4. `update`: once every main task runs the new release and is ready, the weights from the
   rollout apply again, and the second service is retired (weight 0, drain, remove) if the
   rollout no longer wants it.

Steps that change weights end the tick, so the gateway has the new table before the next
step acts on it. `recreate`, and a main service with no ready task, are updated in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from mso.engines.swarm.names import Role
from mso.engines.swarm.observe import ServiceObs

Phase = Literal["standin", "shift", "drain", "update"]


@dataclass(frozen=True)
class Want:
    """What one Swarm service should be."""

    release: int
    replicas: int
    subset: str
    deploy_hash: str


@dataclass(frozen=True)
class Ensure:
    role: Role
    want: Want


@dataclass(frozen=True)
class Drain:
    role: Role


@dataclass(frozen=True)
class Remove:
    role: Role


Action = Ensure | Drain | Remove


@dataclass(frozen=True)
class Progress:
    """Per-service plan state that must survive ticks (and controller restarts)."""

    phase: Phase | None = None
    target: str = ""  # deploy hash the handoff moves the main service to
    retiring: bool = False
    swapped: bool = False  # blue/green: the second service serves stable (swap.py)


@dataclass(frozen=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)
    progress: Progress = Progress()
    note: str = ""
    # role -> the subset its endpoints get in the gateway table; empty: main is stable and
    # the second service keeps the subset on its label
    subsets: dict[str, str] = field(default_factory=dict)


def _matches(obs: ServiceObs | None, want: Want) -> bool:
    return (obs is not None and obs.deploy_hash == want.deploy_hash
            and obs.replicas == want.replicas and obs.subset == want.subset)


def plan_service(stable: Want, second: Want | None, weights: dict[str, int],
                 standin: Want, main: ServiceObs | None, other: ServiceObs | None,
                 progress: Progress, recreate: bool = False) -> Plan:
    """Decide this tick's actions for one mso service. `standin` is the stable release
    as the second service would run it (a different role, so a different deploy hash)."""
    if main is None:
        return _second(Plan([Ensure("main", stable)], weights, Progress()), second, other)
    if progress.phase is not None and progress.target != stable.deploy_hash:
        # The target moved. If the main service already runs the new target (e.g. a
        # deploy reverted before its handoff got far), the handoff ends: handing off to
        # what already runs would drain tasks that no update then replaces, and the
        # gateway keeps a drained endpoint drained for as long as it is listed.
        if main.deploy_hash == stable.deploy_hash:
            progress = Progress()
        elif progress.phase == "standin":
            progress = Progress("standin", stable.deploy_hash)
        else:
            # The stand-in already has all the traffic (e.g. `mso rollback` during a
            # canary promotion): it keeps serving while the main service goes straight to
            # the new target. Starting over would move the traffic back to a main service
            # that may be drained or half-updated.
            progress = replace(progress, target=stable.deploy_hash)
    if progress.phase is None and main.deploy_hash != stable.deploy_hash:
        if recreate or main.ready_on(main.release) == 0:
            return _second(Plan([Ensure("main", stable)], weights, progress,
                                "updating in place"), second, other)
        progress = Progress("standin", stable.deploy_hash)
    if progress.phase is None:
        actions: list[Action] = [] if _matches(main, stable) else [Ensure("main", stable)]
        return _second(Plan(actions, weights, progress), second, other)
    return _handoff(stable, standin, weights, main, other, progress)


def _handoff(stable: Want, standin: Want, weights: dict[str, int], main: ServiceObs,
             other: ServiceObs | None, progress: Progress) -> Plan:
    serving = progress.phase != "standin"  # the second service has the traffic as it is
    subset = other.subset if other is not None and (
        serving or other.deploy_hash == standin.deploy_hash) else standin.subset
    want = replace(standin, subset=subset)
    shifted = {"stable": 0, subset: 100}
    if progress.phase == "standin":
        if not _matches(other, want):
            return Plan([Ensure("second", want)], _zero(weights, subset), progress,
                        "starting the stand-in")
        assert other is not None
        if other.settled_on(want.release, want.replicas):
            return Plan([], shifted, replace(progress, phase="shift"),
                        "stand-in ready: shifting traffic to it")
        return Plan([], _zero(weights, subset), progress, "waiting for the stand-in")
    if progress.phase == "shift":
        return Plan([], shifted, replace(progress, phase="drain"), "traffic shifted")
    if progress.phase == "drain":
        if main.deploy_hash == stable.deploy_hash:
            # Already updated (a restart between acting and saving the phase): its tasks are
            # being replaced, and draining them would not make the update any safer.
            return Plan([], shifted, replace(progress, phase="update"),
                        "main service already updated")
        return Plan([Drain("main"), Ensure("main", stable)], shifted,
                    replace(progress, phase="update"), "draining and updating the main service")
    if main.deploy_hash == stable.deploy_hash and main.settled_on(stable.release, stable.replicas):
        return Plan([], weights, Progress(retiring=False), "main service updated")
    if main.deploy_hash != stable.deploy_hash:
        return Plan([Ensure("main", stable)], shifted, progress, "updating the main service")
    return Plan([], shifted, progress, "waiting for the main service")


def _zero(weights: dict[str, int], subset: str) -> dict[str, int]:
    if subset in weights:
        return weights
    return {**weights, subset: 0}


def _second(plan: Plan, second: Want | None, other: ServiceObs | None) -> Plan:
    """The second service outside a handoff: follow the rollout, or retire it."""
    if second is not None:
        progress = replace(plan.progress, retiring=False)
        if not _matches(other, second):
            return replace(plan, actions=[*plan.actions, Ensure("second", second)],
                           progress=progress)
        return replace(plan, progress=progress)
    if other is None:
        return replace(plan, progress=replace(plan.progress, retiring=False))
    weights = {**plan.weights, other.subset: 0}
    if not plan.progress.retiring:
        return replace(plan, weights=weights, progress=replace(plan.progress, retiring=True),
                       note=plan.note or f"retiring {other.name}")
    return replace(plan, actions=[*plan.actions, Drain("second"), Remove("second")],
                   weights=weights, progress=replace(plan.progress, retiring=False))
