"""The daemon's book of supervised replicas: start, adopt, stop, and their records.

Each replica is a `ReplicaSupervisor` from the local engine. This module owns the glue:
turning a stored release into what the supervisor needs, persisting every state change
(pid and start time first, so a crash right after a spawn still leaves a record to
re-adopt), and draining a replica through the proxy before it is signalled.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mso.controllers.routing import EndpointView
from mso.daemon import containers
from mso.engines.local import container as container_cli
from mso.engines.local.model_map import probe_spec, stop_signal
from mso.releases.ports import port_map
from mso.daemon.replica_env import (Discovery, data_folder, remove_secret_files,
                                    replica_environment, write_config_files,
                                    write_secret_files)
from mso.engines.local import users
from mso.engines.local.users import RunAs
from mso.spec.users import dynamic_name, parse_user, remote_ids
from mso.engines.local.probes import ProbeSpec
from mso.engines.local.process import ProcessRef, is_same_process, kill_env_processes
from mso.engines.local.replica import ReplicaSpec
from mso.engines.local.states import ReplicaState
from mso.engines.local.supervisor import CONTAINER_SETTLE, ReplicaSupervisor
from mso.paths import StatePaths
from mso.ports import free_port
from mso.store.db import Store
from mso.store.records import ReplicaRecord

log = logging.getLogger("mso.daemon.replicas")

STATE_NAMES = {s: s.name for s in ReplicaState}


@dataclass
class ManagedReplica:
    record: ReplicaRecord
    supervisor: ReplicaSupervisor
    epoch: int = 0
    stopping: bool = False
    stop_task: asyncio.Task[None] | None = field(default=None, repr=False)
    #: After a daemon restart, a replica that was READY keeps its place in the rotation
    #: until its readiness probe had a fair chance to answer (monotonic deadline), so
    #: re-adoption never empties the proxy's table.
    assume_ready_until: float = 0.0

    @property
    def ready(self) -> bool:
        if self.stopping:
            return False
        state = self.supervisor.state
        if state == ReplicaState.READY:
            return True
        # PENDING too: adoption completes in the supervisor's task, a moment after adopt().
        return (state in (ReplicaState.PENDING, ReplicaState.RUNNING)
                and time.monotonic() < self.assume_ready_until)


class ReplicaBook:
    """All replicas this daemon supervises, keyed by replica id."""

    def __init__(self, *, store: Store, paths: StatePaths, app: Callable[[], str],
                 base_env: dict[str, str], instance_id: str,
                 discovery: Callable[[dict[str, Any]], list[Discovery]],
                 drain: Callable[[str, float], Awaitable[None]],
                 changed: Callable[[], None],
                 redact: Callable[[list[str]], None],
                 reserved_ports: Callable[[], set[int]],
                 supervisor_kwargs: dict[str, Any]) -> None:
        self.store = store
        self.paths = paths
        self._app = app
        self.base_env = base_env
        self.instance_id = instance_id
        self._discovery = discovery
        self._drain = drain
        self._changed = changed
        self._redact = redact
        self._reserved_ports = reserved_ports
        self._supervisor_kwargs = supervisor_kwargs
        self.replicas: dict[str, ManagedReplica] = {}

    # -- queries ------------------------------------------------------------------------
    def of_service(self, service: str) -> list[ManagedReplica]:
        return [m for m in self.replicas.values() if m.record.service == service]

    def ports_in_use(self) -> set[int]:
        return {port for m in self.replicas.values() for port in m.record.ports.values()}

    def endpoints(self, service: str) -> list[EndpointView]:
        return [EndpointView(m.record.id, m.record.subset, "127.0.0.1", m.record.ports,
                             m.ready) for m in self.of_service(service)]

    # -- lifecycle ----------------------------------------------------------------------
    def _replica_spec(self, record: ReplicaRecord) -> ReplicaSpec:
        release = self.store.release(record.service, record.release)
        if release is None:
            raise LookupError(f"release {record.release} of {record.service} is missing")
        spec = release.spec
        model = spec["model"]
        secrets = self.store.release_secrets(record.service, record.release)
        self._redact([v for v in secrets.values() if v])
        container = containers.is_container(model)
        who = self.run_as(record.service, model.get("user"), container)
        secrets_dir = write_secret_files(self.paths, record.id, secrets, who, container)
        config_dir = write_config_files(self.paths, record.service, record.release,
                                        spec["configs"], who, container)
        data_dir = data_folder(self.paths, record.service, who, container)
        env = replica_environment(
            base=self.base_env, spec=spec, app=self._app(), service=record.service,
            replica=record.id, release=record.release, ports=record.ports, secrets=secrets,
            secrets_dir=secrets_dir, config_dir=config_dir, data_dir=data_dir,
            discovery=self._discovery(model))
        if who is not None and not container:
            env.update(who.env())
        health = model.get("health") or {}
        backoff = model.get("backoff") or {}
        stop = model.get("stop") or {}
        resources = model.get("resources") or {}
        replica = ReplicaSpec(
            id=record.id, service=record.service, release=record.release,
            argv=model["run"] if isinstance(model.get("run"), list) else [model.get("run")],
            shell=bool(model.get("shell")), env=env, cwd=spec["cwd"], ports=record.ports,
            startup=probe_spec(health.get("startup"), port_map(model)),
            readiness=probe_spec(health.get("readiness"), port_map(model)),
            liveness=probe_spec(health.get("liveness"), port_map(model)),
            restart=model.get("restart", "always"),
            backoff=(float(backoff.get("initial", 0.5)), float(backoff.get("max", 30.0)),
                     float(backoff.get("reset_after", 60.0))),
            stop_signal=stop_signal(stop.get("signal", "SIGTERM")),
            stop_grace=float(stop.get("grace", 10.0)),
            cpu=resources.get("cpu"), memory=resources.get("memory"),
            # A container's process is its client (`docker run`), which stays mso's.
            log_dir=self.paths.run_dir, run_as=None if container else who)
        if not containers.is_container(model):
            return replica
        return self._container_replica(replica, record, spec, secrets, secrets_dir,
                                       config_dir, data_dir)

    def run_as(self, service: str, user: str | None, container: bool = False
               ) -> RunAs | None:
        """Who a process of `service` runs as (`user:`); None: mso's own user. A dynamic
        user is made here, at its service's first start (mso.engines.local.users).
        `container`: the numbers the container runs as (`docker run --user`, `dynamic`
        as on Swarm), only to hand it its bind-mounted folders; a name is refused
        before (mso.spec.support: it is known only inside the image)."""
        if user is None:
            return None
        if container:
            uid, gid = remote_ids(self._app(), service, user)
            if not uid.isdigit() or not (gid or uid).isdigit():
                return None
            return RunAs(int(uid), int(gid or uid), (int(gid or uid),), uid, "/")
        return users.resolve(parse_user(user), dynamic_name(self._app(), service))

    def remove_dynamic_users(self, services: dict[str, str | None]) -> list[str]:
        """`mso down`: remove the dynamic users of `services` (name -> `user:`)."""
        removed = []
        for service, user in services.items():
            if user is not None and parse_user(user).dynamic:
                name = dynamic_name(self._app(), service)
                try:
                    if users.remove_dynamic(name):
                        removed.append(name)
                except users.UserUnavailable as exc:
                    log.warning("%s", exc)
        return removed

    def container_launch(self, record: Any, spec: dict[str, Any], secrets: dict[str, str],
                         secrets_dir: Path, config_dir: Path, data_dir: Path,
                         ports: dict[str, int], stop_signal: int = 15, stop_grace: float = 10.0,
                         ) -> tuple[container_cli.ContainerSpec, dict[str, str], str]:
        """A container for `record` (a replica, or a one-off with `id`, `service`,
        `release`, `ports` and `spec_hash`): its spec, the environment it sees (passed
        by name) and the container CLI."""
        model = spec["model"]
        inside = replica_environment(
            base={}, spec=spec, app=self._app(), service=record.service, replica=record.id,
            release=record.release, ports=ports, secrets=secrets,
            secrets_dir=Path(container_cli.SECRETS_DIR),
            config_dir=Path(container_cli.CONFIG_DIR), data_dir=Path(container_cli.DATA_DIR),
            discovery=[dataclasses.replace(d, host=containers.bridge_address(self.store)
                                           or d.host) for d in self._discovery(model)])
        cspec = containers.container_spec(
            store=self.store, model=model, instance=self.instance_id, app=self._app(),
            record=record, env_names=list(inside), secrets_dir=secrets_dir,
            config_dir=config_dir, data_dir=data_dir, stop_signal=stop_signal,
            stop_grace=stop_grace)
        try:
            binary = container_cli.runtime(self.base_env.get("PATH"))
        except container_cli.RuntimeMissing:
            binary = "docker"  # the spawn fails and says so, like any missing program
        return cspec, inside, binary

    def _container_replica(self, replica: ReplicaSpec, record: ReplicaRecord,
                           spec: dict[str, Any], secrets: dict[str, str], secrets_dir: Path,
                           config_dir: Path, data_dir: Path) -> ReplicaSpec:
        """The replica as a container: its process is the container's client (`docker
        run` in the foreground), its limits the container's, its exec probes `docker
        exec`; the container sees its declared ports, /run/secrets and /run/mso/config."""
        cspec, inside, binary = self.container_launch(
            record, spec, secrets, secrets_dir, config_dir, data_dir,
            ports={n: number for n, (_, number) in port_map(spec["model"]).items()},
            stop_signal=replica.stop_signal, stop_grace=replica.stop_grace)

        def inside_probe(probe: ProbeSpec | None) -> ProbeSpec | None:
            if probe is not None and probe.kind == "tcp":
                return dataclasses.replace(probe, settle=CONTAINER_SETTLE)
            if probe is None or probe.kind != "exec" or isinstance(probe.target, str):
                return probe
            return dataclasses.replace(probe, target=container_cli.exec_argv(
                cspec.name, list(probe.target), binary))

        return dataclasses.replace(
            replica, argv=container_cli.run_argv(cspec, binary), shell=False,
            env={**self.base_env, **inside}, cpu=None, memory=None,
            startup=inside_probe(replica.startup), readiness=inside_probe(replica.readiness),
            liveness=inside_probe(replica.liveness), container=cspec.name, runtime=binary)

    def _supervise(self, record: ReplicaRecord, epoch: int) -> ManagedReplica:
        spec = self._replica_spec(record)
        supervisor = ReplicaSupervisor(
            spec, on_transition=self._on_transition, on_ready=self._on_ready,
            drain=self._drain_replica, **self._supervisor_kwargs)
        managed = ManagedReplica(record, supervisor, epoch)
        self.replicas[record.id] = managed
        return managed

    def start(self, service: str, ordinal: int, release: int, epoch: int,
              subset: str = "stable") -> ManagedReplica:
        rel = self.store.release(service, release)
        assert rel is not None
        # Ports are bound later (by the replica), so pick around every port already handed
        # out, not only around the ones bound right now.
        taken = self._reserved_ports() | self.ports_in_use()
        ports: dict[str, int] = {}
        for name in port_map(rel.spec["model"]):
            ports[name] = free_port(avoid=taken)
            taken.add(ports[name])
        suffix = "" if subset == "stable" else f"-{subset}"
        replica_id = f"{service}{suffix}-{ordinal}"
        while replica_id in self.replicas:  # blue/green relabels keep their old names
            ordinal += 1
            replica_id = f"{service}{suffix}-{ordinal}"
        record = ReplicaRecord(id=replica_id, service=service,
                               ordinal=ordinal, release=release, subset=subset,
                               state="PENDING", pid=None, start_time=None, ports=ports,
                               spec_hash=rel.spec_hash)
        self.store.upsert_replica(record)
        managed = self._supervise(record, epoch)
        managed.supervisor.start()
        self._changed()
        return managed

    def adopt(self, record: ReplicaRecord, epoch: int) -> bool:
        """Supervise a replica that survived a daemon crash; False if it is gone."""
        if record.pid is None or record.start_time is None:
            return False
        ref = ProcessRef(record.pid, record.start_time)
        if not is_same_process(ref):
            return False
        was_ready = record.state == "READY"
        try:
            managed = self._supervise(record, epoch)
        except LookupError:
            return False
        readiness = managed.supervisor.spec.readiness
        if was_ready:
            grace = 5.0 if readiness is None else \
                readiness.period * readiness.failure_threshold + readiness.timeout + 1.0
            managed.assume_ready_until = time.monotonic() + grace
        managed.supervisor.adopt(ref)
        self.store.add_event("replica.adopted", f"re-adopted pid {record.pid}",
                             record.service, record.id, {"pid": record.pid})
        return True

    def forget_dead(self, record: ReplicaRecord) -> None:
        """Kill whatever a replica that could not be adopted left behind."""
        killed = kill_env_processes({"MSO_INSTANCE": self.instance_id,
                                     "MSO_REPLICA": record.id})
        self.store.delete_replica(record.id)
        remove_secret_files(self.paths, record.id)
        self.store.add_event("replica.lost", f"not running after a control-plane restart; "
                             f"killed {killed} leftover process(es)", record.service,
                             record.id)

    def stop(self, replica_id: str, reason: str) -> None:
        managed = self.replicas.get(replica_id)
        if managed is None or managed.stopping:
            return
        managed.stopping = True
        self._changed()
        managed.stop_task = asyncio.get_running_loop().create_task(
            self._stop(managed, reason))

    async def _stop(self, managed: ManagedReplica, reason: str) -> None:
        try:
            await managed.supervisor.stop(reason)
        except Exception:
            log.exception("stopping %s failed", managed.record.id)
        finally:
            managed.supervisor.release_logs()
            self.replicas.pop(managed.record.id, None)
            self.store.delete_replica(managed.record.id)
            remove_secret_files(self.paths, managed.record.id)
            self._changed()

    async def stop_services(self, services: set[str], reason: str) -> None:
        """Stop every replica of `services` and wait until they are stopped."""
        for rid, managed in list(self.replicas.items()):
            if managed.record.service in services:
                self.stop(rid, reason)
        tasks = [m.stop_task for m in self.replicas.values()
                 if m.stop_task and m.record.service in services]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop_all(self, reason: str) -> None:
        for rid in list(self.replicas):
            self.stop(rid, reason)
        tasks = [m.stop_task for m in self.replicas.values() if m.stop_task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- supervisor callbacks -------------------------------------------------------------
    def _on_transition(self, replica_id: str, old: ReplicaState, new: ReplicaState,
                       reason: str, ref: ProcessRef | None) -> None:
        managed = self.replicas.get(replica_id)
        if managed is None:
            return
        rec = managed.record
        rec.state = STATE_NAMES[new]
        rec.reason = reason
        rec.restarts = managed.supervisor.restarts
        if ref is not None:
            rec.pid, rec.start_time = ref.pid, ref.start_time
        self.store.upsert_replica(rec)
        self.store.add_event("replica.state", f"{old.name} -> {new.name}: {reason}",
                             rec.service, rec.id,
                             {"from": old.name, "to": new.name, "pid": rec.pid,
                              "release": rec.release})
        self._changed()

    def _on_ready(self, replica_id: str, ready: bool) -> None:
        self._changed()

    async def _drain_replica(self, replica_id: str) -> None:
        managed = self.replicas.get(replica_id)
        if managed is None:
            return
        managed.stopping = True
        # A drain waits for in-flight requests (or, for TCP, open connections) to end;
        # the stop grace period bounds it, as it bounds the process's own shutdown.
        await self._drain(replica_id, max(1.0, managed.supervisor.spec.stop_grace))
