"""What one replica is (``ReplicaSpec``) and the pure decisions its supervisor makes.

The lead maps the normalized manifest onto :class:`ReplicaSpec`; the supervisor only acts.
Decisions that do not need I/O (what to do after an exit, how to describe it) live here
so they can be tested as plain functions.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from mso.engines.local.probes import ProbeSpec
from mso.engines.local.process import INSTANCE_ENV, REPLICA_ENV
from mso.engines.local.states import ReplicaState
from mso.engines.local.users import RunAs

RestartPolicy = Literal["always", "on-failure", "never"]


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything needed to run and supervise one replica."""

    id: str  #: replica id, unique within the instance, e.g. "web-1"
    service: str
    release: int
    argv: list[str] | str  #: a string only with ``shell=True``
    env: dict[str, str]  #: complete environment (PORT etc.); MSO_REPLICA is added
    cwd: str
    log_dir: Path  #: raw ``<id>.stdout.log``/``<id>.stderr.log`` go here
    shell: bool = False
    ports: dict[str, int] = field(default_factory=dict)  #: port name -> bound port
    host: str = "127.0.0.1"
    startup: ProbeSpec | None = None
    readiness: ProbeSpec | None = None
    liveness: ProbeSpec | None = None
    restart: RestartPolicy = "always"
    backoff: tuple[float, float, float] = (1.0, 300.0, 600.0)  #: initial, max, reset_after
    stop_signal: int = signal.SIGTERM
    stop_grace: float = 10.0
    cpu: float | None = None  #: cores, e.g. 0.5
    memory: int | None = None  #: bytes
    #: The replica's process is a container's client (mso.engines.local.container): the
    #: container's name, removed after every exit and stop, and the CLI that removes it.
    container: str | None = None
    runtime: str = "docker"
    #: The user the process runs as (`user:`); None: mso's own.
    run_as: RunAs | None = None

    @property
    def stdout_path(self) -> Path:
        """Raw stdout file of the replica (O_APPEND)."""
        return self.log_dir / f"{self.id}.stdout.log"

    @property
    def stderr_path(self) -> Path:
        """Raw stderr file of the replica (O_APPEND)."""
        return self.log_dir / f"{self.id}.stderr.log"

    @property
    def instance_id(self) -> str | None:
        """``MSO_INSTANCE`` from the environment, if the lead set it."""
        return self.env.get(INSTANCE_ENV)

    def process_env(self) -> dict[str, str]:
        """Environment of the process: the spec's plus the replica marker for sweeps."""
        return {**self.env, REPLICA_ENV: self.id}

    def sweep_match(self) -> dict[str, str]:
        """Environment entries that identify this replica's processes (and only them)."""
        match = {REPLICA_ENV: self.id}
        if self.instance_id is not None:
            match[INSTANCE_ENV] = self.instance_id
        return match


class LogSink(Protocol):
    """What the supervisor needs from log collection (``LogCollector`` implements it)."""

    def attach(self, replica_id: str, service: str, release: int,
               stdout_path: Path, stderr_path: Path) -> None: ...

    def process_exited(self, replica_id: str) -> None: ...

    def detach(self, replica_id: str) -> None: ...


def after_exit(policy: RestartPolicy, status: int | None) -> ReplicaState:
    """State after the process exited: BACKOFF (restart), EXITED (completed) or FAILED.

    An unknown status (adopted process) counts as a failure.
    """
    failed = status is None or status != 0
    if policy == "always" or (policy == "on-failure" and failed):
        return ReplicaState.BACKOFF
    return ReplicaState.FAILED if failed else ReplicaState.EXITED


def describe_exit(status: int | None) -> str:
    """Human-readable exit: "exited with status 1", "killed by signal 9 (SIGKILL)"."""
    if status is None:
        return "exited (status unknown: process was adopted)"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            return f"killed by signal {-status}"
        return f"killed by signal {-status} ({name})"
    return f"exited with status {status}"
