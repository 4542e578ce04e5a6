"""mso.engines.local: the local process runtime (one OS process per replica).

Public API (the daemon drives these):

* :class:`ReplicaSupervisor` with :class:`ReplicaSpec` — supervise one replica.
* :class:`ReplicaState` and the transition table in :mod:`.states`.
* :class:`ProcessRef`, :func:`kill_instance_processes` — identity and sweeps in :mod:`.process`.
* :class:`ProbeSpec` — probes in :mod:`.probes`; :class:`CgroupManager` in :mod:`.cgroups`.
* :class:`LogCollector` / :class:`LogStore` — structured logs in :mod:`.logs`.
"""

from __future__ import annotations

from mso.engines.local.cgroups import Cgroup, CgroupManager
from mso.engines.local.logs import LogCollector, LogStore
from mso.engines.local.probes import ProbeResult, ProbeSpec
from mso.engines.local.process import ProcessRef, kill_instance_processes
from mso.engines.local.replica import ReplicaSpec
from mso.engines.local.states import IllegalTransition, ReplicaState
from mso.engines.local.supervisor import ReplicaSupervisor

__all__ = [
    "Cgroup", "CgroupManager", "IllegalTransition", "LogCollector", "LogStore", "ProbeResult",
    "ProbeSpec", "ProcessRef", "ReplicaSpec", "ReplicaState", "ReplicaSupervisor",
    "kill_instance_processes",
]
