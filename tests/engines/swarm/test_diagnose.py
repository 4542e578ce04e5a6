"""What is wrong with a Swarm replica, read from its slot's task documents (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from mso.engines.problems import CRASH_LOOP_EXITS, READY_ALLOWANCE
from mso.engines.swarm.diagnose import (PLAIN_START_PERIOD, allowance, epoch, job_problem,
                                      rolled_back, slot_problem, slot_view)

T0 = epoch("2026-12-07T03:00:00Z")
assert T0 is not None
CHECK = {"Test": ["CMD", "python3", "/opt/mso/shim.py", "probe", "http", "8000", "/ready", "4.5"],
         "Interval": 1_000_000_000, "Retries": 3, "StartPeriod": 15_000_000_000}


def stamp(seconds: float) -> str:
    """T0 + seconds, as Docker writes it (nanoseconds, trailing zeros trimmed)."""
    whole = int(seconds)
    frac = f"{seconds - whole:.9f}"[2:].rstrip("0")
    return f"2026-12-07T03:{whole // 60:02d}:{whole % 60:02d}" + (f".{frac}" if frac else "") + "Z"


def task(at: float, state: str, desired: str = "shutdown", err: str = "",
         code: int | None = None, release: int = 2, check: dict[str, Any] | None = None,
         since: float | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "Timestamp": stamp(since if since is not None
                                                                 else at + 0.5),
                              "Message": state}
    if err:
        status["Err"] = err
    if code is not None:
        status["ContainerStatus"] = {"ContainerID": f"c{at}", "ExitCode": code}
    spec: dict[str, Any] = {"Labels": {"mso.release": str(release)}}
    if check:
        spec["Healthcheck"] = check
    return {"ID": f"t{at}", "Slot": 1, "CreatedAt": stamp(at), "DesiredState": desired,
            "Status": status, "Spec": {"ContainerSpec": spec}}


def crashed(at: float, code: int = 1, release: int = 2) -> dict[str, Any]:
    return task(at, "failed", err=f"task: non-zero exit ({code})", code=code, release=release)


def test_docker_timestamps_with_trimmed_nanoseconds_order_correctly() -> None:
    a, b = epoch("2026-12-07T03:03:18.8924Z"), epoch("2026-12-07T03:03:18.89248Z")
    assert a is not None and b is not None and a < b
    assert epoch("2026-12-07T03:03:18.892489781Z") == pytest.approx(b + 0.000009781, abs=1e-6)
    assert epoch("") is None and epoch("yesterday") is None


def test_a_running_task_is_fine_whatever_came_before() -> None:
    history = [crashed(0), crashed(2), crashed(4), task(6, "running", "running")]
    assert slot_problem(history, "any", T0 + 10) is None
    view = slot_view(history, "any", T0 + 10)
    assert view is not None and view.state == "READY" and view.restarts == 3


def test_exits_in_a_row_make_a_crash_loop_only_at_the_threshold() -> None:
    history = [crashed(2 * i) for i in range(CRASH_LOOP_EXITS - 1)]
    history.append(task(9, "ready", "ready"))
    assert slot_problem(history, "any", T0 + 10) is None
    view = slot_view(history, "any", T0 + 10)
    assert view is not None and view.state == "STARTING"
    assert view.reason == "restarting: last task exited with status 1"
    history.insert(0, crashed(-2))
    problem = slot_problem(history, "any", T0 + 10)
    assert problem is not None and problem.kind == "crash_loop"
    assert problem.message.startswith(f"exited with status 1, {CRASH_LOOP_EXITS} times in a row")
    view = slot_view(history, "any", T0 + 10)
    assert view is not None and view.state == "BACKOFF" and view.problem == problem


def test_a_task_that_did_not_fail_breaks_the_streak() -> None:
    history = [crashed(0), task(1, "shutdown"), crashed(2), crashed(4),
               task(6, "starting", "running")]
    assert slot_problem(history, "any", T0 + 7) is None


def test_failures_of_an_earlier_release_do_not_count_against_the_new_one() -> None:
    history = [crashed(0, release=1), crashed(2, release=1), crashed(4, release=1),
               task(6, "pending", "running", release=2)]
    assert slot_problem(history, "any", T0 + 7) is None
    history.append(task(5, "failed", err="task: non-zero exit (3)", code=3, release=1))
    assert slot_problem(history, "any", T0 + 7) is None


@pytest.mark.parametrize("err, code", [
    ("No such image: busybox:nosuchtag", None),
    ("starting container failed: OCI runtime create failed: exec: \"x\": executable file not "
     "found in $PATH: unknown", 128),
    ("task: non-zero exit (127)", 127),  # mso's shim: the command is not there
    ("task: non-zero exit (126)", 126),  # ... or cannot be executed
])
def test_a_container_that_could_not_start_fails_at_the_first_time(err: str,
                                                                  code: int | None) -> None:
    history = [task(0, "failed", err=err, code=code), task(2, "ready", "ready")]
    problem = slot_problem(history, "any", T0 + 3)
    assert problem is not None and problem.kind == "start_failed"
    assert problem.message.startswith("cannot start: ")
    if code == 127:
        assert problem.message == "cannot start: exited with status 127 (command not found)"
    elif code == 126:
        assert problem.message == "cannot start: exited with status 126 (command not executable)"
    else:
        assert err.split(":")[0] in problem.message


def test_a_rejected_task_could_not_start() -> None:
    history = [task(0, "rejected", err="No such image: nope:1"), task(1, "pending", "running")]
    problem = slot_problem(history, "any", T0 + 2)
    assert problem is not None and problem.kind == "start_failed"


def test_restart_never_leaves_a_failed_replica() -> None:
    history = [crashed(0)]
    problem = slot_problem(history, "none", T0 + 2)
    assert problem is not None and problem.kind == "failed"
    assert problem.message == "exited with status 1; restart: never"
    view = slot_view(history, "none", T0 + 2)
    assert view is not None and view.state == "FAILED" and view.reason == problem.message
    # with a restart policy the same task is one exit, not a verdict
    assert slot_problem(history, "any", T0 + 2) is None
    assert slot_view(history, "any", T0 + 2) is None  # nothing current to show yet


def test_a_slot_that_was_stopped_shows_nothing() -> None:
    assert slot_view([task(0, "shutdown"), task(1, "complete")], "any", T0 + 2) is None


def _health(*codes: int, output: str = "HTTP GET /ready returned 503\n") -> dict[str, Any]:
    return {"Status": "starting", "FailingStreak": 0,
            "Log": [{"ExitCode": c, "Output": output if c else ""} for c in codes]}


def test_a_starting_task_whose_checks_keep_failing_is_not_ready_after_the_allowance() -> None:
    history = [task(0, "starting", "running", check=CHECK, since=1.0)]
    # the allowance is the check's start period (Docker ignores failures within it)
    assert allowance(CHECK) == max(READY_ALLOWANCE, PLAIN_START_PERIOD)
    early = T0 + 1.0 + allowance(CHECK) - 0.5
    assert slot_problem(history, "any", early, _health(1, 1, 1, 1)) is None
    later = T0 + 1.0 + allowance(CHECK) + 0.5
    problem = slot_problem(history, "any", later, _health(1, 1, 1, 1))
    assert problem is not None and problem.kind == "not_ready"
    assert problem.message.endswith(": HTTP GET /ready returned 503")
    view = slot_view(history, "any", later, _health(1, 1, 1, 1))
    assert view is not None and view.state == "STARTING" and view.reason == problem.message
    # a check that passed among the last `Retries` results: still starting, not failing
    assert slot_problem(history, "any", later, _health(1, 1, 0, 1)) is None
    # health unknown (the container runs on another node): not healthy all the same
    problem = slot_problem(history, "any", later, None)
    assert problem is not None and problem.kind == "not_ready"


def test_a_startup_budget_longer_than_the_plain_start_period_comes_first() -> None:
    slow = dict(CHECK, StartPeriod=60_000_000_000)
    history = [task(0, "starting", "running", check=slow, since=0.0)]
    assert slot_problem(history, "any", T0 + 30, _health(1, 1, 1)) is None
    problem = slot_problem(history, "any", T0 + 61, _health(1, 1, 1))
    assert problem is not None and problem.kind == "not_ready"


def test_without_a_healthcheck_a_starting_task_is_never_judged_not_ready() -> None:
    history = [task(0, "starting", "running", since=0.0)]
    assert slot_problem(history, "any", T0 + 100) is None


def test_a_job_fails_once_swarm_gives_up_and_not_while_it_retries() -> None:
    attempts = [crashed(2 * i, code=2) for i in range(3)]
    assert job_problem(attempts, 3) is None  # a 4th attempt is still to come
    assert job_problem([*attempts, task(7, "ready", "ready")], 3) is None
    gave_up = [*attempts, crashed(6, code=2)]
    problem = job_problem(gave_up, 3)
    assert problem is not None and problem.kind == "failed"
    assert problem.message == "exited with status 2; gave up after 4 attempts"
    once = job_problem([crashed(0, code=2)], 0)  # mso's jobs: one attempt per deploy
    assert once is not None and once.message == "exited with status 2"
    assert job_problem([crashed(0), task(2, "complete")], 3) is None
    missing = job_problem([task(0, "rejected", err="No such image: nope:1")], 3)
    assert missing is not None and missing.kind == "start_failed"


def test_an_update_swarm_rolled_back_after_a_task_of_the_release_failed() -> None:
    def service(state: str, release: int) -> dict[str, Any]:
        return {"Spec": {"Labels": {"mso.release": str(release)}},
                "UpdateStatus": {"State": state, "Message": "update rolled back due to "
                                 "failure or early termination of task x"}}
    history = [crashed(0, release=3), task(1, "shutdown", release=2),
               task(2, "running", "running", release=2)]
    found = rolled_back(service("rollback_started", 2), history, 3)
    assert found is not None
    failed, problem = found
    assert failed is history[0] and problem.kind == "failed"
    assert problem.message == "exited with status 1; Swarm rolled the update to release 3 back"
    # still updating, or the update went through: nothing to say
    assert rolled_back(service("updating", 3), history, 3) is None
    assert rolled_back(service("completed", 3), history, 3) is None
    # rolled back, but no task of the release failed (ended early): not a verdict
    assert rolled_back(service("rollback_completed", 2), history[1:], 3) is None
