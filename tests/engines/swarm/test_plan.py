"""The per-service Swarm plan: creation, handoffs that never update a service under
traffic, and retiring the second service."""

from __future__ import annotations

from mso.engines.swarm.observe import ServiceObs, TaskObs
from mso.engines.swarm.plan import Drain, Ensure, Progress, Remove, Want, plan_service

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
