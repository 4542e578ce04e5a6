"""The per-service Swarm plan: creation, handoffs that never update a service under
traffic, and retiring the second service."""

from __future__ import annotations

from mso.engines.swarm.observe import ServiceObs, TaskObs
import dataclasses

import pytest

from mso.engines.swarm.plan import (Bounds, Drain, Ensure, Progress, Remove, Want,
                                    plan_service)

STABLE_V2 = Want(2, 2, "stable", "main-v2")
STANDIN_V2 = Want(2, 2, "canary", "second-v2")


def task(release: int, ready: bool = True, slot: int = 1) -> TaskObs:
    return TaskObs(f"t{release}{slot}", slot, "n", release, "running" if ready else "starting",
                   "running", "10.0.0.2", "", "", ready, False, "")


def svc(role: str, release: int, deploy_hash: str, replicas: int = 2, subset: str = "stable",
        ready: bool = True) -> ServiceObs:
    tasks = tuple(task(release, ready, s) for s in range(1, replicas + 1))
    return ServiceObs("id-" + role, "app_x", "x", role, subset, release,  # type: ignore[arg-type]
                      deploy_hash, replicas, 1, tasks)


def test_missing_main_service_is_created() -> None:
    plan = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, None, None, Progress())
    assert plan.actions == [Ensure("main", STABLE_V2)]


def test_new_release_starts_a_standin_instead_of_updating_the_main_service() -> None:
    main = svc("main", 1, "main-v1")
    plan = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, None, Progress())
    assert plan.actions == [Ensure("second", STANDIN_V2)]
    assert plan.progress.phase == "standin"
    assert plan.weights["stable"] == 100 and plan.weights["canary"] == 0


def test_ready_standin_takes_all_traffic_before_the_main_service_is_drained() -> None:
    main, other = svc("main", 1, "main-v1"), svc("second", 2, "second-v2", subset="canary")
    p = Progress("standin", "main-v2")
    shift = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, other, p)
    assert shift.actions == [] and shift.weights == {"stable": 0, "canary": 100}
    drain = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, other,
                         shift.progress)
    assert drain.actions == [] and drain.progress.phase == "drain"
    update = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, other,
                          drain.progress)
    assert update.actions == [Drain("main"), Ensure("main", STABLE_V2)]
    assert update.weights == {"stable": 0, "canary": 100}


def test_updated_main_service_gets_traffic_back_then_the_standin_is_retired() -> None:
    main, other = svc("main", 2, "main-v2"), svc("second", 2, "second-v2", subset="canary")
    done = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, other,
                        Progress("update", "main-v2"))
    assert done.progress.phase is None and done.weights == {"stable": 100}
    retire = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, other,
                          done.progress)
    assert retire.actions == [] and retire.weights["canary"] == 0 and retire.progress.retiring
    remove = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, other,
                          retire.progress)
    assert remove.actions == [Drain("second"), Remove("second")]


def test_main_service_still_starting_waits_in_the_update_phase() -> None:
    main = svc("main", 2, "main-v2", ready=False)
    plan = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, None,
                        Progress("update", "main-v2"))
    assert plan.actions == [] and plan.weights["stable"] == 0


def test_recreate_updates_in_place() -> None:
    main = svc("main", 1, "main-v1")
    plan = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, None, Progress(),
                        recreate=True)
    assert plan.actions == [Ensure("main", STABLE_V2)] and plan.progress.phase is None


def test_canary_target_creates_and_scales_the_second_service() -> None:
    main = svc("main", 1, "main-v1")
    canary = Want(2, 1, "canary", "second-v2")
    plan = plan_service(Want(1, 2, "stable", "main-v1"), canary, {"stable": 50, "canary": 50},
                        Want(1, 2, "canary", "second-v1"), main, None, Progress())
    assert plan.actions == [Ensure("second", canary)]
    assert plan.weights == {"stable": 50, "canary": 50}


def test_scaling_only_changes_replicas_of_the_main_service() -> None:
    main = svc("main", 2, "main-v2")
    want = Want(2, 3, "stable", "main-v2")
    plan = plan_service(want, None, {"stable": 100}, STANDIN_V2, main, None, Progress())
    assert plan.actions == [Ensure("main", want)] and plan.progress.phase is None


def test_scaling_down_drains_the_tasks_swarm_removes_first() -> None:
    main = svc("main", 2, "main-v2", replicas=3)
    want = Want(2, 1, "stable", "main-v2")
    plan = plan_service(want, None, {"stable": 100}, STANDIN_V2, main, None, Progress())
    assert plan.actions == [Drain("main", keep=1), Ensure("main", want)]
    assert [t.slot for t in main.removed_by_scale(1)] == [2, 3]


def test_swarm_removes_tasks_that_do_not_run_before_running_ones() -> None:
    tasks = (task(2, slot=1), task(2, ready=False, slot=2), task(2, slot=3))
    main = dataclasses.replace(svc("main", 2, "main-v2", replicas=3), tasks=tasks)
    assert [t.slot for t in main.removed_by_scale(2)] == [2]
    assert [t.slot for t in main.removed_by_scale(1)] == [3, 2]


def _simulate(n: int, bounds: Bounds) -> list[tuple[int, int]]:
    """Drive a rolling update of n replicas from release 1 to 2 through the plan, Swarm
    played by this function (a new task is ready one tick after it was asked for); the
    counts `mso ps` would show at every tick."""
    stable, standin = Want(2, n, "stable", "main-v2"), Want(2, n, "canary", "second-v2")
    services = {"main": svc("main", 1, "main-v1", replicas=n), "second": None}
    progress, seen, drained = Progress(), [], set()
    for _ in range(100):
        plan = plan_service(stable, None, {"stable": 100}, standin, services["main"],
                            services["second"], progress, bounds=bounds)
        for action in plan.actions:
            obs = services[action.role]
            if isinstance(action, Drain):
                assert obs is not None and action.keep is not None
                drained |= {t.id for t in obs.removed_by_scale(action.keep)}
            elif isinstance(action, Remove):
                assert obs is not None and obs.replicas == 0
                services[action.role] = None
            else:
                w = action.want
                old = [t for t in (obs.tasks if obs else ()) if obs and
                       obs.deploy_hash == w.deploy_hash][:w.replicas]
                assert not obs or w.replicas >= len(old) or all(
                    t.id in drained for t in obs.removed_by_scale(w.replicas))
                fresh = tuple(dataclasses.replace(task(w.release, ready=False, slot=s),
                                                  id=f"{action.role}{w.deploy_hash}{s}")
                              for s in range(len(old) + 1, w.replicas + 1))
                services[action.role] = dataclasses.replace(
                    svc(action.role, w.release, w.deploy_hash, 0, w.subset),
                    replicas=w.replicas, tasks=(*old, *fresh))
        progress = plan.progress
        live = [t for o in services.values() if o for t in o.running()]
        seen.append((len(live), sum(1 for t in live if t.ready and t.id not in drained)))
        if plan.actions == [] and progress == Progress() and services["second"] is None \
                and services["main"] is not None and services["main"].release == 2:
            return seen
        # one tick later every task Swarm started is ready
        services = {r: o and dataclasses.replace(o, tasks=tuple(
            dataclasses.replace(t, ready=True, state="running") for t in o.tasks))
            for r, o in services.items()}
    raise AssertionError(f"no end: {seen}")


@pytest.mark.parametrize("n,surge,unavailable", [(3, 1, 0), (3, 0, 1), (2, 2, 1), (4, 1, 2),
                                                  (1, 1, 0)])
def test_a_bounded_rolling_update_stays_within_its_bounds(n: int, surge: int,
                                                          unavailable: int) -> None:
    seen = _simulate(n, Bounds(surge, unavailable))
    assert max(total for total, _ in seen) <= n + surge, seen
    assert min(ready for _, ready in seen) >= n - unavailable, seen


def test_handoff_whose_target_moves_back_to_what_main_runs_ends_without_draining() -> None:
    """A rollout that began after its release was already desired retargets the handoff to
    the release the main service runs: draining it then would leave its tasks, which no
    update replaces, drained in the gateway for good."""
    main, other = svc("main", 1, "main-v1"), svc("second", 1, "second-v1", subset="preview")
    stable_v1 = Want(1, 2, "stable", "main-v1")
    for phase in ("standin", "shift", "drain", "update"):
        plan = plan_service(stable_v1, None, {"stable": 100}, Want(1, 2, "preview", "second-v1"),
                            main, other, Progress(phase, "main-v2"))  # type: ignore[arg-type]
        assert Drain("main") not in plan.actions
        assert plan.progress.phase is None and plan.weights["stable"] == 100


def test_drain_phase_after_the_update_was_already_applied_does_not_drain_again() -> None:
    main, other = svc("main", 2, "main-v2"), svc("second", 2, "second-v2", subset="canary")
    plan = plan_service(STABLE_V2, None, {"stable": 100}, STANDIN_V2, main, other,
                        Progress("drain", "main-v2"))
    assert plan.actions == [] and plan.progress.phase == "update"
    assert plan.weights == {"stable": 0, "canary": 100}


def test_a_target_moving_after_the_shift_keeps_the_standin_serving_and_updates_main() -> None:
    """E.g. `mso rollback` while a canary promotion hands off: the stand-in (release 2)
    has all the traffic and the main service is drained or half-updated. Moving traffic
    back to it would fail requests; the main service goes straight to the new target."""
    stable_v3 = Want(3, 2, "stable", "main-v3")
    standin_v3 = Want(3, 2, "canary", "second-v3")
    other = svc("second", 2, "second-v2", subset="canary")
    for phase, main in (("shift", svc("main", 1, "main-v1")),
                        ("drain", svc("main", 1, "main-v1")),
                        ("update", svc("main", 2, "main-v2", ready=False))):
        plan = plan_service(stable_v3, None, {"stable": 100}, standin_v3, main, other,
                            Progress(phase, "main-v2"))  # type: ignore[arg-type]
        assert plan.weights == {"stable": 0, "canary": 100}, phase
        assert Ensure("second", standin_v3) not in plan.actions, phase
        assert plan.progress.target == "main-v3", phase
        if phase != "shift":
            assert Ensure("main", stable_v3) in plan.actions, phase
