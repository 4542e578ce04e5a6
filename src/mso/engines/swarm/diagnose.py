"""What is wrong with a Swarm replica, from the Docker API's task documents (pure).

A replica on Swarm is a task *slot*: when a task's container exits, Swarm records the task
as failed (its `Err` says why: `task: non-zero exit (1)`, `No such image: ...`,
`starting container failed: ... executable file not found`) and, after the restart
policy's delay, starts a new task in the same slot. So a slot's task history is the
replica's history, and `problem` (mso.engines.problems) is read from it:

* ``start_failed``: the newest ended task of the slot could not start its container (the
  task was rejected, Docker could not create or start it, or mso's shim found no
  executable to run: exit 127 or 126, as a shell reports it);
* ``failed``: it exited non-zero and the restart policy is `none` (`restart: never`);
* ``crash_loop``: ``CRASH_LOOP_EXITS`` tasks of the current release failed in a row and
  the slot has no running task now (a task that is running is READY: see below);
* ``not_ready``: the task's container runs, Docker's healthcheck (mso's readiness probe)
  has not passed, its last ``Retries`` results failed, and it started
  ``READY_ALLOWANCE`` seconds ago or more (more if the healthcheck's start period, which
  carries a `startup` probe's budget and is never under ``PLAIN_START_PERIOD``, is longer).

With a healthcheck Swarm keeps a task in `starting` until the check passes, so a
`running` task is a ready one. Swarm keeps no history of a task's states, only its last;
an exit after a long healthy run counts as one exit of the streak, as it does in
Kubernetes' restart count.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from mso.engines.images import shim
from mso.engines.problems import CRASH_LOOP_EXITS, READY_ALLOWANCE, Problem
from mso.engines.swarm import names

_FAILED = ("failed", "rejected")
_CURRENT_DESIRED = ("running", "ready")
NS = 1_000_000_000
#: Docker healthcheck start periods mso sets without a `startup` probe (spec.MIN_START_PERIOD).
PLAIN_START_PERIOD = 15.0
#: Exit codes of mso's shim when the command cannot be run (not found, not executable).
_CANNOT_RUN = (126, 127)
_CODE_MEANS = {127: " (command not found)", 126: " (command not executable)"}
_START_ERRORS = ("no such image", "starting container failed", "executable file not found",
                 "invalid mount", "oci runtime", "error response from daemon",
                 "failed to create", "no such file or directory", "permission denied",
                 "invalid reference format")


def epoch(stamp: str | None) -> float | None:
    """An RFC 3339 timestamp with up to nanoseconds (Docker trims trailing zeros)."""
    if not stamp:
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$",
                     stamp.strip())
    if match is None:
        return None
    base, frac, zone = match.groups()
    when = dt.datetime.fromisoformat(base + ("+00:00" if zone in (None, "Z") else zone))
    return when.timestamp() + (float(f"0.{frac}") if frac else 0.0)


def task_release(task: dict[str, Any]) -> int:
    labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    try:
        return int(labels.get(names.LABEL_RELEASE, 0))
    except (TypeError, ValueError):
        return 0


def _status(task: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = task.get("Status") or {}
    return status


def _state(task: dict[str, Any]) -> str:
    return str(_status(task).get("State", ""))


def exit_code(task: dict[str, Any]) -> int | None:
    code = (_status(task).get("ContainerStatus") or {}).get("ExitCode")
    if code is None:
        match = re.search(r"non-zero exit \((\d+)\)", str(_status(task).get("Err", "")))
        return int(match.group(1)) if match else None
    return int(code)


def _created(task: dict[str, Any]) -> float:
    return epoch(task.get("CreatedAt")) or epoch(_status(task).get("Timestamp")) or 0.0


def is_current(task: dict[str, Any]) -> bool:
    """The task Swarm wants to run in its slot (not one being replaced or shut down)."""
    return str(task.get("DesiredState", "")) in _CURRENT_DESIRED


def start_failure(task: dict[str, Any]) -> bool:
    """The task's container never ran its command."""
    if _state(task) == "rejected":
        return True
    if _state(task) != "failed":
        return False
    if exit_code(task) in _CANNOT_RUN:
        return True
    err = str(_status(task).get("Err", "")).lower()
    return "non-zero exit" not in err and any(s in err for s in _START_ERRORS)


def describe_exit(task: dict[str, Any]) -> str:
    """One failed task in words: `exited with status 1 (task: non-zero exit (1))`."""
    err = str(_status(task).get("Err", "")).strip()
    code = exit_code(task)
    if code is not None and "non-zero exit" in err:
        return f"exited with status {code}{_CODE_MEANS.get(code, '')}"
    return err or f"{_state(task)} ({_status(task).get('Message', '')})"


def _failure_streak(history: list[dict[str, Any]], release: int) -> list[dict[str, Any]]:
    """Failed tasks of `release`, newest first, up to the first task that did not fail."""
    streak = []
    for task in history:
        if _state(task) not in _FAILED or task_release(task) != release:
            break
        streak.append(task)
    return streak


def _health_failing(health: dict[str, Any] | None, retries: int) -> tuple[bool, str]:
    """(the last `retries` checks failed, the last check's output). Unknown health (the
    container is on another node) counts as failing: the task is not healthy."""
    if not health:
        return True, ""
    log = health.get("Log") or []
    last = log[-max(1, retries):]
    failing = bool(last) and all(int(e.get("ExitCode", 1)) != 0 for e in last)
    output = str(log[-1].get("Output", "")).strip() if log else ""
    return failing, output.splitlines()[-1] if output else ""


def shim_crash_loop(health: dict[str, Any] | None) -> str:
    """What the shim's status check last said about a crash loop (`exited with status 1,
    3 times in a row without becoming ready; restarting in 0.8s`), or ""."""
    log = (health or {}).get("Log") or []
    output = str(log[-1].get("Output", "")).strip() if log else ""
    prefix = f"not ready: {shim.CRASH_LOOP}"
    return output[len(prefix):] if output.startswith(prefix) else ""


def allowance(healthcheck: dict[str, Any]) -> float:
    """Seconds a started task has before a failing healthcheck is a problem: at least the
    check's start period (Docker does not count failures within it, and a first check of
    a container that is still starting on a loaded machine may time out), which carries
    a `startup` probe's budget when there is one."""
    start = float(healthcheck.get("StartPeriod", 0) or 0) / NS
    return max(READY_ALLOWANCE, start)


@dataclass(frozen=True)
class SlotView:
    """One replica: the task shown for it, and what is wrong with it."""

    task: dict[str, Any]
    state: str
    reason: str
    restarts: int
    problem: Problem | None


STATES = {"running": "READY", "starting": "STARTING", "failed": "FAILED",
           "rejected": "FAILED", "shutdown": "STOPPED", "complete": "STOPPED",
           "orphaned": "FAILED", "remove": "STOPPING"}


def slot_problem(history: list[dict[str, Any]], restart: str, now: float,
                 health: dict[str, Any] | None = None) -> Problem | None:
    """What is wrong with one slot. `history`: the slot's tasks (any order); `restart`:
    the service's restart condition (any, on-failure, none); `health`: the Docker
    `State.Health` of the current task's container, when known."""
    tasks = sorted(history, key=_created, reverse=True)
    current = next((t for t in tasks if is_current(t)), None)
    if current is not None and _state(current) == "running":
        return None
    # A current task that already failed (Swarm has not replaced it yet) ended too.
    ended = [t for t in tasks if t is not current or _state(t) in _FAILED]
    release = task_release(current) if current is not None else (
        task_release(ended[0]) if ended else 0)
    streak = _failure_streak(ended, release)
    if streak and start_failure(streak[0]):
        return Problem("start_failed", f"cannot start: {describe_exit(streak[0])}")
    if streak and (current is None or _state(current) in _FAILED) and restart == "none":
        return Problem("failed", f"{describe_exit(streak[0])}; restart: never")
    if len(streak) >= CRASH_LOOP_EXITS:
        return Problem("crash_loop", f"{describe_exit(streak[0])}, {len(streak)} times in a "
                       "row; Swarm keeps restarting it")
    if current is not None and _state(current) == "starting":
        check = ((current.get("Spec") or {}).get("ContainerSpec") or {}).get("Healthcheck")
        since = epoch(_status(current).get("Timestamp"))
        said = shim_crash_loop(health)
        if said:  # the shim restarts the process in its container: Swarm sees no exit
            return Problem("crash_loop", f"{said}; mso's shim keeps restarting it")
        if check and since is not None and now - since >= allowance(check):
            failing, output = _health_failing(health, int(check.get("Retries", 1) or 1))
            if failing:
                why = f": {output}" if output else ""
                return Problem("not_ready", f"readiness probe failing {now - since:.0f}s "
                               f"after start{why}")
    return None


def slot_view(history: list[dict[str, Any]], restart: str, now: float,
              health: dict[str, Any] | None = None) -> SlotView | None:
    """The row of one slot: its current task (or, with nothing current, the failed task
    that `restart: never` left), the state, reason and restarts ps shows. None when the
    slot has nothing to show (scaled down, stopped)."""
    tasks = sorted(history, key=_created, reverse=True)
    current = next((t for t in tasks if is_current(t)), None)
    problem = slot_problem(history, restart, now, health)
    failed = sum(1 for t in tasks if t is not current and _state(t) in _FAILED)
    if current is None:
        if problem is None or problem.kind not in ("failed", "start_failed") or not tasks:
            return None
        return SlotView(tasks[0], "FAILED", problem.message, failed, problem)
    state = STATES.get(_state(current), "STARTING")
    if problem is not None and problem.kind in ("crash_loop", "start_failed") \
            and (_state(current) not in ("running", "starting") or shim_crash_loop(health)):
        state = "BACKOFF"
    reason = problem.message if problem else str(_status(current).get("Err", ""))
    if not reason and failed and state != "READY":
        last = next(t for t in tasks if t is not current and _state(t) in _FAILED)
        reason = f"restarting: last task {describe_exit(last)}"
    return SlotView(current, state, reason, failed, problem)


def job_problem(history: list[dict[str, Any]], max_attempts: int) -> Problem | None:
    """What is wrong with a job's run (a Swarm ReplicatedJob restarted on failure up to
    `max_attempts` times): it could not start, or every attempt failed and none is left."""
    tasks = sorted(history, key=_created, reverse=True)
    if any(_state(t) == "complete" for t in tasks):
        return None
    ended = [t for t in tasks if _state(t) in _FAILED]
    if ended and start_failure(ended[0]):
        return Problem("start_failed", f"cannot start: {describe_exit(ended[0])}")
    if len(ended) > max_attempts and not any(_state(t) not in _FAILED and is_current(t)
                                             for t in tasks):
        tries = f"; gave up after {len(ended)} attempts" if len(ended) > 1 else ""
        return Problem("failed", f"{describe_exit(ended[0])}{tries}")
    return None


def rolled_back(service: dict[str, Any], tasks: list[dict[str, Any]],
                wanted: int) -> tuple[dict[str, Any], Problem] | None:
    """Swarm rolled back the service's update to release `wanted` (its update config's
    failure action) after a task of that release failed: that task and the problem.
    Swarm starts no task of the release after that; the failed one is the evidence."""
    status = service.get("UpdateStatus") or {}
    spec_labels = (service.get("Spec") or {}).get("Labels") or {}
    if not str(status.get("State", "")).startswith("rollback") \
            or str(spec_labels.get(names.LABEL_RELEASE)) == str(wanted):
        return None
    failed = sorted((t for t in tasks if _state(t) in _FAILED and task_release(t) == wanted),
                    key=_created, reverse=True)
    if not failed:
        return None
    task = failed[0]
    if start_failure(task):
        return task, Problem("start_failed", f"cannot start: {describe_exit(task)}")
    return task, Problem("failed", f"{describe_exit(task)}; Swarm rolled the update to "
                         f"release {wanted} back")
