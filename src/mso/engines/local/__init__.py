"""mso.engines.local: the local process runtime (one OS process per replica).

Public API (the daemon drives these):

* :class:`ReplicaSupervisor` with :class:`ReplicaSpec` — supervise one replica.
* :class:`ReplicaState` and the transition table in :mod:`.states`.
* :class:`ProcessRef`, :func:`kill_instance_processes` — identity and sweeps in :mod:`.process`.
* :class:`ProbeSpec` — probes in :mod:`.probes`; :class:`CgroupManager` in :mod:`.cgroups`.
* :class:`LogCollector` / :class:`LogStore` — structured logs in :mod:`.logs`.
"""

from __future__ import annotations

# The submodules are imported by their users (`from mso.engines.local.supervisor import
# ReplicaSupervisor`): importing the package must stay cheap, because the CLI reads
# `mso.engines.local.process` for its sweep and must not pay for the supervisor.
