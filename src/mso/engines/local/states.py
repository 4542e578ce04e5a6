"""Replica lifecycle states of the local engine and the table of allowed transitions.

This module has no dependencies so that the store, the API and the CLI can import the
state names without pulling in the process runtime.

Lifecycle (Kubernetes-like)::

    PENDING ──spawn──> STARTING ──startup ok──> RUNNING <──readiness──> READY
       │ (adopt) ────────────────────────────────^
    any alive state ──exit──> BACKOFF ──delay──> STARTING        (restart policy says restart)
                      └─────> EXITED                              (exit 0, policy on-failure/never)
                      └─────> FAILED                              (non-zero exit, policy never)
    any non-terminal ──stop()──> STOPPING ──> STOPPED

Decisions:

* ``EXITED`` is the "completed" state: the process exited with status 0 and the policy
  (``on-failure`` or ``never``) does not restart it. It is terminal, like a finished job.
* ``FAILED`` means we gave up: a non-zero exit (or a kill, or an unknown status of an
  adopted process) under policy ``never``. ``on-failure``/``always`` never give up; they
  keep restarting with capped exponential backoff (like Kubernetes CrashLoopBackOff).
* ``stop()`` on a terminal state is a no-op: the replica keeps ``EXITED``/``FAILED`` so the
  reason is not overwritten, and no process exists to stop.
"""

from __future__ import annotations

from enum import Enum


class ReplicaState(str, Enum):
    """State of one supervised replica."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    READY = "ready"
    BACKOFF = "backoff"
    FAILED = "failed"
    EXITED = "exited"
    STOPPING = "stopping"
    STOPPED = "stopped"


class IllegalTransition(RuntimeError):
    """A state change that the lifecycle table does not allow (a programming error)."""

    def __init__(self, old: ReplicaState, new: ReplicaState) -> None:
        super().__init__(f"illegal replica state transition {old.value} -> {new.value}")
        self.old = old
        self.new = new


S = ReplicaState

#: A process exists (or may exist) for the replica.
ALIVE_STATES = frozenset({S.STARTING, S.RUNNING, S.READY, S.STOPPING})
#: Probes run in these states.
PROBING_STATES = frozenset({S.STARTING, S.RUNNING, S.READY})
#: Startup has completed: liveness/readiness probes are active.
STARTED_STATES = frozenset({S.RUNNING, S.READY})
#: The replica receives traffic.
SERVING_STATES = frozenset({S.READY})
#: Nothing will happen any more without a new supervisor.
TERMINAL_STATES = frozenset({S.STOPPED, S.FAILED, S.EXITED})
#: ``stop()`` has work to do.
STOPPABLE_STATES = frozenset({S.PENDING, S.STARTING, S.RUNNING, S.READY, S.BACKOFF})

_EXIT_TARGETS = frozenset({S.BACKOFF, S.FAILED, S.EXITED, S.STOPPING})

ALLOWED: dict[ReplicaState, frozenset[ReplicaState]] = {
    # PENDING -> BACKOFF/FAILED: the spawn itself failed (e.g. executable not found).
    S.PENDING: frozenset({S.STARTING, S.RUNNING, S.BACKOFF, S.FAILED, S.STOPPING}),
    S.STARTING: frozenset({S.RUNNING}) | _EXIT_TARGETS,
    # RUNNING -> RUNNING: still not ready, with a new reason (its readiness probe fails).
    S.RUNNING: frozenset({S.RUNNING, S.READY}) | _EXIT_TARGETS,
    S.READY: frozenset({S.RUNNING}) | _EXIT_TARGETS,
    S.BACKOFF: frozenset({S.STARTING, S.BACKOFF, S.FAILED, S.STOPPING}),
    S.STOPPING: frozenset({S.STOPPED}),
    S.STOPPED: frozenset(),
    S.FAILED: frozenset(),
    S.EXITED: frozenset(),
}


def is_allowed(old: ReplicaState, new: ReplicaState) -> bool:
    """Whether ``old -> new`` is an edge of the lifecycle."""
    return new in ALLOWED[old]


def check_transition(old: ReplicaState, new: ReplicaState) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is allowed."""
    if not is_allowed(old, new):
        raise IllegalTransition(old, new)
