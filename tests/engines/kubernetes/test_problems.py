"""What is wrong with a pod, in mso's problem kinds, from the pod's own JSON (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from mso.engines.images import shim, supervision
from mso.engines.kubernetes.views import epoch, needs_events, pod_problem, ps, replica_row
from mso.engines.problems import CRASH_LOOP_EXITS, READY_ALLOWANCE

T0 = epoch("2026-12-07T03:00:00Z")
assert T0 is not None
PROBE = {"httpGet": {"path": "/ready", "port": 8000}, "periodSeconds": 1, "failureThreshold": 3}


def at(seconds: int) -> str:
    return f"2026-12-07T03:{seconds // 60:02d}:{seconds % 60:02d}Z"


def pod(app: dict[str, Any], *, probe: bool = False, policy: str = "Always",
        ready_since: int | None = None, ready: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running", "containerStatuses": [
        dict({"name": "app", "ready": ready, "restartCount": 0}, **app),
        {"name": "mso-bridge", "ready": True, "restartCount": 0,
         "state": {"running": {"startedAt": at(0)}}}]}
    if ready_since is not None:
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                 "lastTransitionTime": at(ready_since)}]
    container: dict[str, Any] = {"name": "app"}
    if probe:
        container["readinessProbe"] = PROBE
    return {"metadata": {"name": "api-5bc4d58cc5-mv5j9",
                         "labels": {"mso.dev/service": "api", "mso.dev/release": "3",
                                    "mso.dev/subset": "stable"}},
            "spec": {"restartPolicy": policy, "containers": [container]}, "status": status}


def exited(code: int = 1, reason: str = "Error", started: int = 1, finished: int = 2,
           message: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": at(started),
                           "finishedAt": at(finished), "containerID": "docker://abc"}
    if message:
        out["message"] = message
    return out


def test_a_running_ready_pod_has_no_problem() -> None:
    healthy = pod({"state": {"running": {"startedAt": at(0)}}}, probe=True, ready=True,
                  ready_since=2)
    assert pod_problem(healthy, T0 + 600) is None
    assert replica_row(healthy, 8000)["problem"] is None


def test_crash_loop_back_off_is_a_crash_loop_at_once() -> None:
    """The kubelet restarts an exited container at once, and backs off from the second
    exit: CrashLoopBackOff is the first sign of a loop, long before three exits."""
    crashing = pod({"restartCount": 1, "state": {"waiting": {
        "reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}},
        "lastState": {"terminated": exited()}})
    problem = pod_problem(crashing, T0 + 5)
    assert problem is not None and problem.kind == "crash_loop"
    assert problem.message == ("exited with status 1 (Error); restarted 1 time, "
                               "in CrashLoopBackOff")
    row = replica_row(crashing, 8000, problem)
    assert row["state"] == "BACKOFF" and row["reason"] == problem.message
    assert row["problem"] == {"kind": "crash_loop", "message": problem.message}
    assert row["pid"] is None


def test_restarts_without_ever_becoming_ready_are_a_crash_loop_between_back_offs() -> None:
    def restarted(count: int, not_ready_since: int) -> dict[str, Any]:
        return pod({"restartCount": count, "state": {"running": {"startedAt": at(40)}},
                    "lastState": {"terminated": exited(started=20, finished=21)}},
                   probe=True, ready_since=not_ready_since)
    problem = pod_problem(restarted(CRASH_LOOP_EXITS, not_ready_since=0), T0 + 41)
    assert problem is not None and problem.kind == "crash_loop"
    assert pod_problem(restarted(CRASH_LOOP_EXITS - 1, not_ready_since=0), T0 + 41) is None
    # the last run was ready for a while (the pod became unready only when it exited)
    assert pod_problem(restarted(CRASH_LOOP_EXITS, not_ready_since=21), T0 + 41) is None


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull",
                                    "CreateContainerConfigError", "CreateContainerError",
                                    "RunContainerError"])
def test_waiting_to_be_created_or_started_is_a_start_failure(reason: str) -> None:
    stuck = pod({"state": {"waiting": {"reason": reason, "message": "something explains"}}})
    problem = pod_problem(stuck, T0 + 1)
    assert problem is not None and problem.kind == "start_failed"
    assert problem.message == f"{reason}: something explains"


def test_an_executable_not_found_is_a_start_failure_in_the_runtimes_own_words() -> None:
    chain = ('failed to start container "6b22": Error response from daemon: failed to create '
             'shim task: OCI runtime create failed: runc create failed: unable to start '
             'container process: exec: "nosuch": executable file not found in $PATH: unknown')
    waiting = pod({"state": {"waiting": {"reason": "RunContainerError", "message": chain}}})
    problem = pod_problem(waiting, T0 + 1)
    assert problem is not None
    assert problem.message == ('RunContainerError: exec: "nosuch": executable file not found '
                               'in $PATH')
    # later the same container waits in CrashLoopBackOff: its last run never ran
    backoff = pod({"restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                   "lastState": {"terminated": exited(127, "ContainerCannotRun",
                                                      message=chain)}})
    problem = pod_problem(backoff, T0 + 30)
    assert problem is not None and problem.kind == "start_failed"
    assert problem.message.startswith("cannot start: exited with status 127 "
                                      "(ContainerCannotRun): exec: \"nosuch\"")


def test_a_pod_that_is_never_restarted_fails() -> None:
    done = pod({"state": {"terminated": exited(3)}}, policy="Never")
    problem = pod_problem(done, T0 + 5)
    assert problem is not None and problem.kind == "failed"
    assert problem.message == "exited with status 3 (Error); restartPolicy: Never"
    ok = pod({"state": {"terminated": exited(0, "Completed")}}, policy="Never")
    assert pod_problem(ok, T0 + 5) is None


def test_not_ready_after_the_allowance_with_the_kubelets_reason() -> None:
    running = pod({"state": {"running": {"startedAt": at(10)}}, "started": True}, probe=True,
                  ready_since=10)
    assert pod_problem(running, T0 + 10 + READY_ALLOWANCE - 1) is None
    assert not needs_events(running, T0 + 10 + READY_ALLOWANCE - 1)
    now = T0 + 10 + READY_ALLOWANCE + 1
    assert needs_events(running, now)
    events = [
        {"reason": "Unhealthy", "message": "Readiness probe failed: Get x: connection refused",
         "lastTimestamp": at(12)},
        {"reason": "Unhealthy", "message": "Readiness probe failed: HTTP probe failed with "
         "statuscode: 503", "lastTimestamp": at(20)},
        {"reason": "Pulled", "message": "Container image already present",
         "lastTimestamp": at(9)}]
    problem = pod_problem(running, now, events)
    assert problem is not None and problem.kind == "not_ready"
    assert problem.message == ("not ready 11s after start: Readiness probe failed: HTTP probe "
                               "failed with statuscode: 503")
    problem = pod_problem(running, now)
    assert problem is not None and problem.message.endswith(": readiness probe failing")


def test_a_pod_that_was_ready_gets_the_allowance_again_from_when_it_stopped_being() -> None:
    """Payments loses its kvstore for a while: its readiness fails, but it was ready."""
    was_ready = pod({"state": {"running": {"startedAt": at(0)}}, "started": True}, probe=True,
                    ready_since=60)
    assert pod_problem(was_ready, T0 + 60 + READY_ALLOWANCE - 1) is None
    problem = pod_problem(was_ready, T0 + 60 + READY_ALLOWANCE + 1)
    assert problem is not None and problem.kind == "not_ready"
    assert problem.message.startswith("not ready 11s after it was last ready: ")


def test_not_judged_while_a_startup_probe_runs_nor_without_a_readiness_probe() -> None:
    starting = pod({"state": {"running": {"startedAt": at(0)}}, "started": False}, probe=True)
    assert pod_problem(starting, T0 + 100) is None
    unprobed = pod({"state": {"running": {"startedAt": at(0)}}})
    assert pod_problem(unprobed, T0 + 100) is None


def test_a_terminating_or_pending_pod_has_no_problem() -> None:
    crashing = pod({"state": {"waiting": {"reason": "CrashLoopBackOff"}}})
    crashing["metadata"]["deletionTimestamp"] = at(3)
    assert pod_problem(crashing, T0 + 5) is None
    pending = {"metadata": {"name": "p", "labels": {}}, "status": {"phase": "Pending"}}
    assert pod_problem(pending, T0 + 5) is None


def test_ps_rows_carry_the_problem_and_never_a_pid() -> None:
    crashing = pod({"restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": exited()}})
    data = ps("shop", "shop", [crashing], {"api": 8000}, T0 + 5)
    (row,) = data["replicas"]
    assert row["problem"]["kind"] == "crash_loop" and row["pid"] is None
    assert row["reason"] == row["problem"]["message"]


def test_a_process_crashing_in_its_container_under_the_shim_is_a_crash_loop() -> None:
    """The shim restarts it in the container: the kubelet sees a running container whose
    startupProbe (the shim's status check) fails saying so."""
    starting = pod({"state": {"running": {"startedAt": at(10)}}, "started": False})
    starting["spec"]["containers"][0]["startupProbe"] = {
        "exec": {"command": supervision.STATUS_CHECK}, "periodSeconds": 1}
    assert needs_events(starting, T0 + 11)
    said = "exited with status 1, 3 times in a row without becoming ready; restarting in 2s"
    events = [{"reason": "Unhealthy", "lastTimestamp": at(12),
               "message": "Startup probe failed: not ready: started"},
              {"reason": "Unhealthy", "lastTimestamp": at(14),
               "message": f"Startup probe failed: not ready: {shim.CRASH_LOOP}{said}\n"}]
    assert pod_problem(starting, T0 + 11, events[:1]) is None
    problem = pod_problem(starting, T0 + 15, events)
    assert problem is not None and problem.kind == "crash_loop"
    assert problem.message == f"{said}; mso's shim keeps restarting it in the container"
    assert replica_row(starting, 8000, problem)["state"] == "BACKOFF"
    starting["status"]["containerStatuses"][0]["started"] = True  # ready once: no more
    assert not needs_events(starting, T0 + 15)
