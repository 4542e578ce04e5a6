"""The daemon: one per app, reconciling desired state with processes and the proxy.

Lifecycle: take the lock, open the store, adopt or start the proxy, re-adopt surviving
replicas (or clean up after them), then loop: plan every service, act, push the route
table when it changed. The API is served alongside. `down` drains and stops everything,
then sweeps every process carrying this instance's marker, grandchildren included.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets as pysecrets
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from mso.errors import Conflict
from mso.controllers.autoscale import Autoscaler, refuse_autoscaled
from mso.controllers.autoscale import status as autoscale_status
from mso.controllers.replicas import ObservedReplica, RollingParams, StartReplica, plan
from mso.controllers.rollouts import Member, RolloutController, RolloutError
from mso.controllers.routing import (RouteLimits, RouteView, ServiceRouting, build_table,
                                     file_rev, gateway_tls, tls_config)
from mso.controllers.zero import ZeroPolicy, hold_table, watch_held
from mso.daemon.jobs import JobRunner
from mso.daemon.logsettings import LogSettings
from mso.releases.ports import port_map
from mso.daemon.figures import Figures
from mso.daemon.proxy_manager import ProxyManager
from mso.releases.apply import AppliedChange, apply_manifest
from mso.releases.rollback import rollback_target
from mso.releases.sources import source_digests
from mso.daemon.replica_env import (Discovery, base_environment, data_folder,
                                    remove_run_folders, replica_environment,
                                    write_config_files, write_secret_files)
from mso.daemon.replicas import ManagedReplica, ReplicaBook
from mso.ports import free_port
from mso.engines.local.cgroups import CgroupManager
from mso.engines.local.logs import LogCollector, LogStore
from mso.daemon import containers
from mso.engines.local import container as container_cli
from mso.engines.local.process import is_alive, kill_instance_processes, signal_group
from mso.engines.local.states import ReplicaState
from mso.paths import StatePaths
from mso.spec.load import LoadedManifest
from mso.spec.models import Route
from mso.spec.service import ProxySettings
from mso.store.db import Store
from mso.store.health import StoreUnavailable
from mso.store.records import Desired

#: The per-try timeout of a service that does not write `proxy.per_try_timeout`.
PER_TRY_TIMEOUT = ProxySettings.model_fields["per_try_timeout"].default

log = logging.getLogger("mso.daemon")

RECONCILE_PERIOD = 0.5
#: With nothing changed (no wake-up, no rollout, no re-adopted replica on probation), the
#: route table is rebuilt at most this often: with 1,000 replicas building it twice a
#: second was a fifth of the idle daemon's own work. The proxy keeps the last table.
ROUTES_REFRESH = 5.0


class DaemonBusy(Conflict):
    """Another daemon already holds this app's lock."""


class Daemon:
    """The control plane of one app on the local engine."""

    def __init__(self, paths: StatePaths) -> None:
        self.paths = paths
        self.store: Store
        self.instance_id = ""
        self.book: ReplicaBook
        self.proxy: ProxyManager
        self.jobs: JobRunner
        self.cgroups: CgroupManager
        self.log_store: LogStore
        self.collector: LogCollector
        self._lock_fd: int | None = None
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._shutting_down = False
        self._draining: set[str] = set()
        self.figures = Figures()
        self._epochs: dict[str, int] = {}
        #: service -> (epoch, strategy) of a restart told how to replace its replicas.
        self._restart_strategy: dict[str, tuple[int, Literal["rolling", "recreate"]]] = {}
        self._push_error: str | None = None
        self._tls_revs: tuple[str, ...] | None = None  # the certificate files last pushed
        #: Bumped by every wake(): what the last pushed route table was built from.
        self._changes = 0
        self._routes_key: tuple[object, ...] | None = None
        self._routes_built = 0.0
        self.started_at = time.time()
        #: Why the manifest given at start-up was not applied (a store the disk refuses
        #: writes to), for `mso up`; None when it was.
        self.apply_error: str | None = None
        self._app_config_raw = ""
        self._app_config: dict[str, Any] = {}

    # -- start-up ---------------------------------------------------------------------
    def acquire_lock(self) -> None:
        self.paths.ensure()
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise DaemonBusy(f"a daemon is already running for {self.paths.state_dir}") from exc
        pid = str(os.getpid()).encode()
        try:  # written over the old pid first: a full disk cannot leave the file empty
            os.pwrite(fd, pid, 0)
            os.ftruncate(fd, len(pid))
        except OSError as exc:  # the lock is held; the pid in it is only informative
            log.warning("could not write the daemon's pid into %s: %s", self.paths.lock,
                        exc.strerror or exc)
        self._lock_fd = fd

    async def start(self) -> None:
        self.store = Store(self.paths.db)
        # A missing or wrong secrets key ends the start here (SecretsKeyError), before
        # anything runs; values an older mso kept in plain text are sealed now.
        migrated = self.store.open_secrets()
        self.instance_id = self.store.get_meta("instance_id") or uuid.uuid4().hex[:16]
        self.store.set_meta("instance_id", self.instance_id)
        try:
            self.store.set_meta("daemon_pid", str(os.getpid()))
        except StoreUnavailable:
            pass  # informative only; a daemon starting on a full disk serves all the same
        self.cgroups = CgroupManager(f"mso/{self.instance_id}")
        logs = LogSettings.from_env(os.environ)
        self.log_store = LogStore(self.paths.logs_dir, logs.max_bytes_per_service, logs.files)
        self.collector = LogCollector(self.log_store, truncate_after=logs.raw_bytes,
                                      reserve=logs.raw_bytes)
        base_env = base_environment(self.instance_id)
        self.proxy = ProxyManager(self.store, self.paths.proxy_socket, self.paths.run_dir,
                                  base_env)
        self.book = ReplicaBook(
            store=self.store, paths=self.paths, app=self.app_name, base_env=base_env,
            instance_id=self.instance_id, discovery=self.discovery, drain=self._drain,
            changed=self.wake, redact=self.log_store.redact,
            reserved_ports=self.reserved_ports,
            supervisor_kwargs={"cgroups": self.cgroups, "logs": self.collector})
        self.jobs = JobRunner(self)
        self.rollouts = RolloutController(self)
        self.autoscaler = Autoscaler(self, self.autoscaled)
        self._collector_task = asyncio.get_running_loop().create_task(self.collector.run())
        # Scale to zero: the proxy says at once when a request waits for a replica.
        self._held_task = asyncio.get_running_loop().create_task(watch_held(
            lambda since, wait: self.proxy.client.held(since, wait), self._wake_from_zero,
            self._scales_to_zero))
        self._ensure_api_token()
        await self.proxy.ensure_running()
        self._recover()
        self.store.add_event("daemon.started", f"control plane started (pid {os.getpid()})")
        if migrated:
            self.store.add_event("secrets.encrypted", f"the kept secrets of {migrated} "
                                 f"release(s) are now encrypted at rest")

    def _ensure_api_token(self) -> None:
        if not self.paths.api_token.exists():
            fd = os.open(self.paths.api_token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(pysecrets.token_urlsafe(32))

    def _recover(self) -> None:
        """Re-adopt replicas that survived a crash; clean up after the others."""
        for record in self.store.replicas():
            epoch = self._epochs.get(record.service, 0)
            if not self.book.adopt(record, epoch):
                self.book.forget_dead(record)
        self._sweep_containers(keep=set(self.book.replicas))
        self.jobs.recover()
        self.rollouts.recover()

    # -- app configuration ----------------------------------------------------------------
    def app_config(self) -> dict[str, Any]:
        """The app's config, parsed once per stored value (the route inputs read it twice
        a second): shared, so read it, never change it."""
        raw = self.store.get_meta("app_config")
        if not raw:
            return {}
        if raw != self._app_config_raw:
            self._app_config_raw, self._app_config = raw, json.loads(raw)
        return self._app_config

    def app_name(self) -> str:
        return str(self.app_config().get("app", ""))

    def stable_ports(self) -> dict[str, int]:
        raw = self.store.get_meta("stable_ports")
        return json.loads(raw) if raw else {}

    def reserved_ports(self) -> set[int]:
        """Ports mso's own listeners use or will use: never hand them to a replica."""
        taken = set(self.stable_ports().values()) | self.declared_ports()
        raw = self.store.get_meta("metrics_port")
        if raw:
            taken.add(int(raw))
        return taken

    def _allocate_stable_ports(self) -> None:
        ports = self.stable_ports()
        taken = self.reserved_ports() | self.book.ports_in_use()
        for service, desired in self.store.desired().items():
            if desired.kind != "service":
                continue
            release = self.store.release(service, desired.release)
            assert release is not None
            for name in port_map(release.spec["model"]):
                key = f"{service}/{name}"
                if key not in ports:
                    ports[key] = free_port(avoid=taken)
                    taken.add(ports[key])
        self.store.set_meta("stable_ports", json.dumps(ports, sort_keys=True))

    def declared_ports(self) -> set[int]:
        """Listener ports the manifest names: the gateway's and blue/green preview ports."""
        config = self.app_config()
        ports = {int(config.get("gateway", {}).get("port", 8080))}
        if config.get("gateway", {}).get("tls"):
            ports.add(int(config["gateway"]["tls"]["port"]))
        for rollout in (config.get("rollouts") or {}).values():
            if rollout.get("preview_port"):
                ports.add(int(rollout["preview_port"]))
        return ports

    def metrics_port(self) -> int:
        """The proxy's metrics listener: the port below the gateway's when that is free,
        kept across restarts, and moved when the manifest gives its port to another
        listener (two listeners on one port make the proxy refuse every table push)."""
        declared = self.declared_ports()
        raw = self.store.get_meta("metrics_port")
        if raw and int(raw) not in declared:
            return int(raw)
        avoid = declared | set(self.stable_ports().values()) | self.book.ports_in_use()
        port = free_port(avoid=avoid)
        beside = int(self.app_config().get("gateway", {}).get("port", 8080)) - 1
        if beside > 0 and beside not in avoid:
            try:
                import socket
                with socket.socket() as s:
                    s.bind(("127.0.0.1", beside))
                port = beside
            except OSError:
                pass
        if raw:
            self.store.add_event("proxy.metrics_moved",
                                 f"metrics listener moved from port {raw} to {port}: the "
                                 f"manifest gives {raw} to another listener",
                                 data={"from": int(raw), "to": port})
        self.store.set_meta("metrics_port", str(port))
        return port

    def discovery(self, model: dict[str, Any]) -> list[Discovery]:
        """Stable addresses of the services `model` depends on."""
        ports = self.stable_ports()
        found: list[Discovery] = []
        for dep in model.get("depends_on") or {}:
            release = self.store.latest_release(dep)
            if release is None or release.spec.get("kind") != "service":
                continue
            named = port_map(release.spec["model"])
            chosen = next((n for n, (p, _) in named.items() if p == "http"), None)
            chosen = chosen or next(iter(named), None)
            if chosen is None or f"{dep}/{chosen}" not in ports:
                continue
            found.append(Discovery(dep, "127.0.0.1", ports[f"{dep}/{chosen}"],
                                   named[chosen][0]))
        return found

    # -- operations called by the API ---------------------------------------------------
    def apply(self, loaded: LoadedManifest, author: str | None = None,
              force: bool = False, built: dict[str, str] | None = None,
              sources: dict[str, str] | None = None) -> list[AppliedChange]:
        """Make `loaded` the desired state. `built`: the images of its container services
        (`containers.build_images`, which blocks: the API builds them off the loop);
        `sources`: the code digests of its `run:` services (`sources.source_digests`,
        which reads files: the API computes them off the loop too)."""
        m = loaded.manifest
        previous = self.app_config()
        config = {"app": m.app, "manifest": str(loaded.path),
                  "gateway": _gateway_config(loaded),
                  "routes": [{"path": r.path, "host": r.host, "service": r.service,
                              "port": r.port, **_route_limits(r)} for r in m.routes],
                  "rollouts": {n: s.rollout.model_dump(mode="json")
                               for n, s in m.services.items()},
                  "autoscale": {n: s.autoscale.model_dump(mode="json")
                                for n, s in m.services.items() if s.autoscale is not None}}
        if m.tracing is not None:
            config["tracing"] = {"endpoint": m.tracing.endpoint or "",
                                 "sample": m.tracing.sample}
        self.store.set_meta("app_config", json.dumps(config, sort_keys=True))
        before = self.store.desired()
        if built is None:
            built = containers.build_images(loaded)
        changes = apply_manifest(self.store, loaded, author, force)
        if built:
            changes = containers.record_builds(self.store, changes, built, author)
        if sources is None:
            sources = source_digests(loaded)
        if sources:
            changes = containers.record_sources(self.store, changes, sources, author)
        changes += _app_changes(previous, config)
        self._allocate_stable_ports()
        self._begin_rollouts(before)
        self.jobs.retry_failed()
        for change in changes:
            if change.created:
                self.store.add_event("release.created", f"release {change.release}: "
                                     f"{change.change}", change.service,
                                     data={"release": change.release})
        self.wake()
        return changes

    def _begin_rollouts(self, before: dict[str, Desired]) -> None:
        for name, want in self.store.desired().items():
            old = before.get(name)
            if want.kind != "service" or old is None or old.release == want.release:
                continue
            if any(not m.stopping for m in self.book.of_service(name)):
                self.rollouts.begin(name, old.release, want.release)

    def rollback(self, service: str, to: int | None, author: str | None = None) -> int:
        """A rollback brings back the code the target ran: a container's image (recorded
        per release), while a `run:` service runs the files on disk, so rolling it back
        to other code than they hold is refused (mso.releases.sources)."""
        identity = containers.code_identity(self.store, service)
        want = self.store.desired().get(service)
        current = self.store.release(service, want.release) if want is not None else None
        if want is None or want.kind != "service" or current is None:
            raise KeyError(service)
        target = rollback_target(self.store.releases(service), current, to, identity).number
        containers.check_source_rollback(self.store, service, target)
        number = self.rollouts.rollback(service, target, author, identity)
        containers.record_rollback(self.store, service, number, target)
        self.wake()
        return number

    def scale(self, service: str, replicas: int) -> None:
        desired = self.store.desired().get(service)
        if desired is None or desired.kind != "service":
            raise KeyError(service)
        refuse_autoscaled(self.autoscaled(), service, desired.replicas)
        self.set_replicas(service, replicas)
        self.store.add_event("service.scaled", f"scaled to {replicas}", service,
                             data={"replicas": replicas})

    def autoscaled(self) -> dict[str, dict[str, Any]]:
        """service -> its manifest's `autoscale` (JSON), for the services that have one."""
        return dict(self.app_config().get("autoscale") or {})

    def autoscale_status(self) -> dict[str, dict[str, Any]]:
        """Each autoscaled service's bounds, count and last decision (`mso ps`)."""
        return autoscale_status(self.store, self.autoscaled(), self.autoscaler.state)

    def set_replicas(self, service: str, replicas: int) -> None:
        """Run `replicas` replicas of `service` (fewer: the extra ones drain and stop)."""
        desired = self.store.desired()[service]
        self.store.set_desired(Desired(service, "service", desired.release, replicas,
                                       desired.manifest_replicas))
        self.wake()

    def serving(self, service: str) -> int:
        return sum(1 for m in self.book.of_service(service) if m.ready)

    def _scales_to_zero(self) -> bool:
        return any(ZeroPolicy.from_spec(s) is not None for s in self.autoscaled().values())

    def _wake_from_zero(self, waiting: dict[str, int]) -> None:
        if self.autoscaler.wake(waiting):
            self.wake()

    def cpu_seconds(self, service: str) -> dict[str, float] | None:
        """CPU seconds each replica's cgroup used so far; None without CPU accounting."""
        found: dict[str, float] = {}
        for managed in self.book.of_service(service):
            group = managed.supervisor.cgroup
            used = group.cpu_seconds() if group is not None and not managed.stopping else None
            if used is not None:
                found[managed.record.id] = used
        return found or None

    def restart(self, service: str, strategy: str | None = None) -> str:
        """Replace every replica of `service`; returns how: "rolling" or "recreate"
        (`strategy`, e.g. `mso up --watch`'s `action: recreate`, overrides the service's
        rollout strategy for this restart only).

        A rolling restart starts a replacement, waits for it to be READY, and only then
        stops an old replica: a replacement that crashes (the supervisor restarts it with
        its backoff) or never becomes ready leaves every old replica serving, for as long
        as it takes; `settle_restart` ends such a restart."""
        if service not in self.store.desired():
            raise KeyError(service)
        epoch = self._epochs.get(service, 0) + 1
        self._epochs[service] = epoch
        how: Literal["rolling", "recreate"] = (
            "recreate" if strategy == "recreate" else
            "rolling" if strategy == "rolling" else self._rolling_params(service).strategy)
        if strategy is not None:
            self._restart_strategy[service] = (epoch, how)
        self.store.add_event("service.restart", f"{how} restart requested", service,
                             data={"strategy": how})
        self.wake()
        return how

    def restart_generation(self, service: str) -> int:
        """How many times `service` was restarted since the daemon started: the
        `generation` of its replicas in /v1/ps (a settled restart adopts the old ones)."""
        return self._epochs.get(service, 0)

    def settle_restart(self, service: str, reason: str = "") -> int:
        """End a restart whose replacement failed (`reason`: why, for the event the
        dashboard and `mso events` show): the READY replicas it did not replace yet are
        kept as they are, and the replacements that are not READY are stopped. Returns
        how many replacements were stopped."""
        if service not in self.store.desired():
            raise KeyError(service)
        epoch = self._epochs.get(service, 0)
        stopped = 0
        for managed in self.book.of_service(service):
            if managed.stopping:
                continue
            if managed.epoch != epoch and managed.ready:
                managed.epoch = epoch  # serving: it stays
            elif managed.epoch == epoch and not managed.ready:
                self.book.stop(managed.record.id, "restart settled: the replacement is not "
                               "READY; the replicas serving keep serving")
                stopped += 1
        self._restart_strategy.pop(service, None)
        why = f"{reason}; " if reason else ""
        self.store.add_event("service.restart_failed",
                             f"restart failed: {why}{stopped} replacement(s) stopped, the "
                             "serving replicas kept", service,
                             data={"stopped": stopped, "reason": reason})
        self.wake()
        return stopped

    def signal_service(self, service: str, signame: str) -> int:
        """Send `signame` to every live replica of `service` (no restart); returns how many
        were signalled."""
        if service not in self.store.desired():
            raise KeyError(service)
        sig = signal.Signals[signame]
        sent = 0
        for managed in self.book.of_service(service):
            ref = managed.supervisor.ref
            if not managed.stopping and ref is not None and signal_group(ref, sig):
                sent += 1
        self.store.add_event("service.signal", f"{signame} sent to {sent} replica(s)", service,
                             data={"signal": signame, "replicas": sent})
        return sent

    def wake(self) -> None:
        self._changes += 1
        self._wake.set()

    @property
    def push_error(self) -> str | None:
        """Why the last route table could not be applied (None: it was)."""
        return self._push_error

    @property
    def stopped(self) -> asyncio.Event:
        """Set once `down` (or `detach`) finished: followers end their streams."""
        return self._stopped

    def oneoff_environment(self, service: str, release: int, run_id: str,
                           spec: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
        """Environment (and secrets) of a process that is not a replica: a job run or
        `mso run`. Its secrets are written to a private folder named after `run_id`."""
        secrets = self.store.release_secrets(service, release)
        container = containers.is_container(spec["model"])
        who = self.book.run_as(service, spec["model"].get("user"), container)
        env = replica_environment(
            base=self.book.base_env, spec=spec, app=self.app_name(), service=service,
            replica=run_id, release=release, ports={}, secrets=secrets,
            secrets_dir=write_secret_files(self.paths, run_id, secrets, who, container),
            config_dir=write_config_files(self.paths, service, release, spec["configs"],
                                          who, container),
            data_dir=data_folder(self.paths, service, who, container),
            discovery=self.discovery(spec["model"]))
        if who is not None and not container:
            env.update(who.env())
        env["MSO_REPLICA"] = run_id
        return env, secrets

    # -- RolloutHost ------------------------------------------------------------------------
    def members(self, service: str) -> list[Member]:
        return [Member(m.record.subset, m.record.release, m.ready, m.stopping)
                for m in self.book.of_service(service)]

    def subset_addresses(self, service: str, subset: str, port: str) -> list[str]:
        """DirectHost: where `rollout.analysis.load` reaches the subset's READY replicas."""
        return [f"http://127.0.0.1:{m.record.ports[port]}"
                for m in self.book.of_service(service)
                if m.record.subset == subset and m.ready and not m.stopping
                and port in m.record.ports]

    async def metrics(self) -> dict[str, Any]:
        return await self.proxy.metrics()

    async def traces(self) -> list[Any]:
        """The proxy's recent sampled traces, newest first (the dashboard's Traces page)."""
        return await self.proxy.client.traces()

    def relabel(self, service: str, mapping: dict[str, str]) -> None:
        for managed in self.book.of_service(service):
            new = mapping.get(managed.record.subset)
            if new is not None:
                managed.record.subset = new
                self.store.upsert_replica(managed.record)

    # -- reconcile ----------------------------------------------------------------------
    async def run_forever(self) -> None:
        while not self._shutting_down:
            self._wake.clear()
            began = time.monotonic()
            try:
                await self.reconcile_once()
            except StoreUnavailable:
                pass  # said once by the store; what runs goes on, retried next tick
            except Exception:
                log.exception("reconcile failed; retrying")
            self.figures.reconciled(time.monotonic() - began)
            if self.figures.due(time.monotonic()):
                await self._push_figures()
            try:
                await asyncio.wait_for(self._wake.wait(), RECONCILE_PERIOD)
            except asyncio.TimeoutError:
                pass
        await self._stopped.wait()

    async def reconcile_once(self) -> None:
        self.store.recover()  # a no-op unless the disk refused writes
        desired = self.store.desired()
        try:
            # Both record what they do: with a disk that refuses writes they wait (a
            # step that cannot be recorded is not taken), and the services go on.
            self.jobs.reconcile({n: d for n, d in desired.items() if d.kind == "job"})
            await self.rollouts.tick()
            await self.autoscaler.tick()
        except StoreUnavailable:
            pass
        desired = self.store.desired()
        for name, want in desired.items():
            if want.kind == "service":
                await self._reconcile_service(name, want)
        for managed in list(self.book.replicas.values()):
            owner = desired.get(managed.record.service)
            if owner is None or owner.kind != "service":
                self.book.stop(managed.record.id, "removed from the manifest")
        await self.push_routes()

    async def _push_figures(self) -> None:
        """The control plane's figures, for the proxy's Prometheus endpoint."""
        phases: dict[str, str] = {}
        weights: dict[str, dict[str, int]] = {}
        for name, want in self.store.desired().items():
            if want.kind != "service":
                continue
            state = self.rollouts.active(name)
            if state is not None:
                phases[name] = state.phase.value
            weights[name] = self.rollouts.targets(name, want)[1]
        replicas = [(m.record.id, m.record.service, m.supervisor.state.value.upper(),
                     m.record.restarts, m.supervisor.probe_failures)
                    for m in self.book.replicas.values()]
        try:
            await self.proxy.client.set_control_metrics(
                self.figures.families(replicas, phases, weights))
        except Exception as exc:  # no proxy right now: the next push says it all again
            log.debug("control metrics not pushed: %s", exc)

    async def _reconcile_service(self, service: str, want: Desired) -> None:
        epoch = self._epochs.get(service, 0)
        targets, _ = self.rollouts.targets(service, want)
        wanted_subsets = {t.subset for t in targets}
        mine = self.book.of_service(service)
        self._settle_first_release(service, want, mine)
        for managed in mine:
            if managed.record.subset not in wanted_subsets:
                self.book.stop(managed.record.id, f"{managed.record.subset} replicas retired")
        live = any(not m.stopping for m in mine)
        params = self._rolling_params(service)
        for target in targets:
            observed = [ObservedReplica(m.record.id, m.record.ordinal,
                                        m.record.release if m.epoch == epoch else -1,
                                        m.ready, m.stopping)
                        for m in mine if m.record.subset == target.subset]
            may_start = live or self.dependencies_met(service, target.release)
            for action in plan(target.release, target.replicas, observed, params, may_start):
                if isinstance(action, StartReplica):
                    self.book.start(service, action.ordinal, action.release, epoch,
                                    target.subset)
                    # A spawn blocks the loop for a few ms; yield after each, so that
                    # starting 1,000 replicas does not starve the API and the probes
                    # of the replicas already started (they timed out).
                    await asyncio.sleep(0)
                else:
                    self.book.stop(action.replica_id, action.reason)

    def _settle_first_release(self, service: str, want: Desired,
                              mine: list[ManagedReplica]) -> None:
        """A release that went out without a rollout (the first one) is promoted once all
        its replicas are READY; rollouts record their own outcomes."""
        if self.rollouts.active(service) is not None:
            return
        ready = sum(1 for m in mine if m.ready and m.record.release == want.release)
        if ready < want.replicas:
            return
        release = self.store.release(service, want.release)
        if release is not None and release.outcome == "pending":
            self.store.set_release_outcome(service, want.release, "promoted")
            self.store.add_event("release.promoted", f"release {want.release} is live",
                                 service, data={"release": want.release})

    def _rolling_params(self, service: str) -> RollingParams:
        rollout = self.app_config().get("rollouts", {}).get(service, {})
        strategy: Literal["rolling", "recreate"] = (
            "recreate" if rollout.get("strategy") == "recreate" else "rolling")
        forced = self._restart_strategy.get(service)
        if forced is not None:
            epoch = self._epochs.get(service, 0)
            if forced[0] == epoch and any(m.epoch != epoch
                                          for m in self.book.of_service(service)):
                strategy = forced[1]
            elif all(m.epoch == epoch for m in self.book.of_service(service)):
                del self._restart_strategy[service]  # that restart is over
        return RollingParams(strategy, rollout.get("max_surge", 1),
                             rollout.get("max_unavailable", 0))

    def dependencies_met(self, service: str, release: int) -> bool:
        return self.unmet_dependency(service, release) is None

    def unmet_dependency(self, service: str, release: int) -> str | None:
        """What `service` still waits for before its first replica may start, said as a
        person would ("orders to be healthy"); None when nothing."""
        rel = self.store.release(service, release)
        if rel is None:
            return f"release {release}"
        conditions: dict[str, str] = dict(rel.spec["model"].get("depends_on") or {})
        conditions.update({job: "completed" for job in self.jobs.jobs_before(service)})
        for dep, condition in conditions.items():
            if not self._condition_met(dep, condition):
                kind = "job " if self.jobs.is_job(dep) else ""
                verb = {"healthy": "be healthy (a READY replica)",
                        "completed": "complete successfully"}.get(condition, "start")
                return f"{kind}{dep} to {verb}"
        return None

    def waiting(self) -> dict[str, str]:
        """Services with no replica yet because a dependency is not met, and why."""
        out: dict[str, str] = {}
        for name, want in self.store.desired().items():
            if want.kind != "service" or want.replicas == 0 \
                    or any(not m.stopping for m in self.book.of_service(name)):
                continue
            unmet = self.unmet_dependency(name, want.release)
            if unmet is not None:
                out[name] = f"waiting for {unmet}"
        return out

    def _condition_met(self, dep: str, condition: str) -> bool:
        if self.jobs.is_job(dep):
            return self.jobs.succeeded(dep) if condition == "completed" \
                else self.jobs.started(dep)
        states = [m.supervisor.state for m in self.book.of_service(dep) if not m.stopping]
        if condition == "healthy":
            return ReplicaState.READY in states
        if condition == "completed":
            return ReplicaState.EXITED in states
        return any(s in (ReplicaState.RUNNING, ReplicaState.READY) for s in states)

    # -- routing --------------------------------------------------------------------------
    def routing(self) -> list[ServiceRouting]:
        ports = self.stable_ports()
        services: list[ServiceRouting] = []
        autoscaled = self.autoscaled()
        for name, want in self.store.desired().items():
            if want.kind != "service":
                continue
            release = self.store.release(name, want.release)
            assert release is not None
            named = port_map(release.spec["model"])
            targets, weights = self.rollouts.targets(name, want)
            rollout = self.rollouts.active(name)
            preview = None
            if rollout is not None and rollout.strategy == "blue_green":
                preview = self.rollouts.spec(name, rollout.to_release).get("preview_port")
            endpoints = self.book.endpoints(name)
            # Written or not: the proxy's per-try timeout is on by default (docs/manifest.md).
            proxy = release.spec["model"].get("proxy") or {}
            per_try = proxy.get("per_try_timeout", PER_TRY_TIMEOUT)
            services.append(ServiceRouting(
                name=name,
                ports={p: (proto, ports[f"{name}/{p}"]) for p, (proto, _) in named.items()
                       if f"{name}/{p}" in ports},
                endpoints=endpoints, weights=weights, preview_port=preview,
                per_try_timeout=float(per_try), hedge_delay=float(proxy.get("hedge_delay") or 0.0),
                releases={t.subset: t.release for t in targets},
                unavailable="" if any(e.ready for e in endpoints)
                else self._unavailable(name, want),
                hold=hold_table(autoscaled.get(name))))
        return services

    def _unavailable(self, service: str, want: Desired) -> str:
        """Why `service` has no ready replica, in a few words (the gateway's 503)."""
        if want.replicas == 0:
            return "scaled to 0 replicas"
        mine = [m for m in self.book.of_service(service) if not m.stopping]
        if not mine:
            unmet = self.unmet_dependency(service, want.release)
            return f"no replica yet: waiting for {unmet}" if unmet else "no replica yet"
        parts = []
        for m in sorted(mine, key=lambda m: m.record.id):
            problem = m.supervisor.problem()
            detail = problem.message if problem else m.supervisor.last_reason
            kind = problem.kind.replace("_", " ") + ": " if problem else ""
            parts.append(f"{m.record.id} {m.supervisor.state.name} ({kind}{detail[:160]})")
        return "no ready replica: " + "; ".join(parts)

    def route_table(self) -> dict[str, Any]:
        config = self.app_config()
        gateway = config.get("gateway", {"bind": "127.0.0.1", "port": 8080})
        routes = []
        for r in config.get("routes", []):
            port = r.get("port") or self._default_http_port(r["service"])
            if port:
                routes.append(RouteView(r.get("path") or "/", r.get("host"), r["service"], port,
                                        RouteLimits.of(r)))
        tracing = config.get("tracing")
        return build_table(bind=gateway["bind"], gateway_port=int(gateway["port"]),
                           metrics_port=self.metrics_port(), routes=routes,
                           services=self.routing(), draining=frozenset(self._draining),
                           tracing=None if tracing is None
                           else {**tracing, "app": self.app_name()},
                           container_bind=containers.bridge_address(self.store),
                           tls=gateway_tls(gateway.get("tls")),
                           max_client_connections=int(
                               gateway.get("max_connections_per_client") or 0))

    def _default_http_port(self, service: str) -> str | None:
        release = self.store.latest_release(service)
        if release is None:
            return None
        return next((n for n, (p, _) in port_map(release.spec["model"]).items()
                     if p == "http"), None)

    def _routes_unchanged(self) -> bool:
        """Whether the route table cannot have changed since it was last pushed: no
        wake-up since (every replica transition, apply, scale... wakes the daemon), the
        same draining set, no active rollout (weights move with time) and no re-adopted
        replica on probation; rebuilt anyway every ROUTES_REFRESH seconds."""
        key = self._routes_inputs()
        if key != self._routes_key or time.monotonic() - self._routes_built > ROUTES_REFRESH:
            return False
        now = time.monotonic()
        if any(m.assume_ready_until > now for m in self.book.replicas.values()):
            return False
        return not any(want.kind == "service" and self.rollouts.active(name) is not None
                       for name, want in self.store.desired().items())

    def _routes_inputs(self) -> tuple[object, ...]:
        # Which replicas exist and are ready is checked directly (cheap next to building
        # the table), so a wake-up lost with a failed store write cannot keep a dead
        # replica in the rotation until the next refresh.
        # The certificate files too: a changed one is pushed (hot reload) within a reconcile.
        tls = self.app_config().get("gateway", {}).get("tls") or {}
        return (self._changes, frozenset(self._draining),
                tuple((rid, m.ready) for rid, m in self.book.replicas.items()),
                tuple(file_rev(c["cert"], c["key"]) for c in tls.get("certificates", [])))

    async def push_routes(self) -> None:
        if self._routes_unchanged():
            return
        if not self.app_config():
            return
        key = self._routes_inputs()
        built = time.monotonic()
        try:
            if await self.proxy.push(self.route_table()):
                log.debug("route table pushed")
        except Exception as exc:
            log.warning("route table push failed: %s", exc)
            # Retried every reconcile: said once (and again only if the reason changes),
            # not twice a second until it is fixed.
            message = f"route table push failed: {exc}"
            if message != self._push_error:
                self._push_error = message
                self.store.add_event("proxy.error", message + " (retrying until it works)")
            return
        self._routes_key, self._routes_built = key, built
        self._note_tls_reload(key[-1])
        if self._push_error is not None:
            self._push_error = None
            self.store.add_event("proxy.recovered", "route table applied again")

    def _note_tls_reload(self, revs: Any) -> None:
        """An event when the gateway took changed certificate files (hot reload)."""
        if self._tls_revs is not None and revs and revs != self._tls_revs:
            tls = self.app_config().get("gateway", {}).get("tls") or {}
            files = [c["cert"] for c in tls.get("certificates", [])]
            self.store.add_event("gateway.tls_reloaded",
                                 f"gateway certificates reloaded ({', '.join(files)}): new "
                                 "TLS connections get them, open ones keep theirs",
                                 data={"certificates": files})
        self._tls_revs = tuple(revs)

    async def _drain(self, replica_id: str, timeout: float) -> None:
        self._draining.add(replica_id)
        managed = self.book.replicas.get(replica_id)
        service = managed.record.service if managed else None
        try:
            await self.push_routes()
            drained = await self.proxy.drain(replica_id, timeout)
        except asyncio.CancelledError:
            # The supervisor ends a drain when the process exits: its connections are gone.
            ref = managed.supervisor.ref if managed else None
            if ref is not None and not is_alive(ref):
                self.store.add_event("replica.drained", "the process exited while draining",
                                     service, replica_id)
            raise
        finally:
            self._draining.discard(replica_id)
        self.store.add_event("replica.drained" if drained else "replica.drain_timeout",
                             "in-flight requests finished" if drained else
                             f"in-flight requests still running after {timeout}s",
                             service, replica_id)

    # -- shutdown -------------------------------------------------------------------------
    async def down(self) -> None:
        """Stop everything this app runs and leave no process behind."""
        self._shutting_down = True
        self.wake()
        self.store.add_event("daemon.down", "stopping all replicas")
        await self.jobs.stop_all()
        # Dependents first: a service's clients are gone (and their connections through
        # the proxy closed) before it is drained, so a TCP service such as a database is
        # not held up for its whole grace period by idle pooled connections.
        for level in self._stop_order():
            await self.book.stop_services(level, "mso down")
        await self.book.stop_all("mso down")
        self._remove_users()
        try:
            self.store.clear_desired()
        except StoreUnavailable:
            log.error("mso down: desired state not cleared (the store cannot be written); "
                      "everything is stopped anyway")
        await self.proxy.stop()
        self._sweep()
        self.store.add_event("daemon.stopped", "all processes stopped")
        self._stopped.set()

    def _remove_users(self) -> None:
        """The replicas are gone: so go the dynamic users of the app's services and the
        folders of secrets and config handed to other users (replica_env)."""
        remove_run_folders(self.paths)
        wanted: dict[str, str | None] = {}
        for service in self.store.services_with_releases():
            release = self.store.latest_release(service)
            if release is not None:
                wanted[service] = release.spec["model"].get("user")
        for name in self.book.remove_dynamic_users(wanted):
            self.store.add_event("user.removed", f"dynamic user {name} removed")

    def _stop_order(self) -> list[set[str]]:
        """Services with replicas, in groups that may stop together: each group only
        once nothing that depends on its services runs any more."""
        running = {m.record.service for m in self.book.replicas.values()}
        deps: dict[str, set[str]] = {}
        for name in running:
            want = self.store.desired().get(name)
            release = self.store.release(name, want.release) if want else None
            model = release.spec["model"] if release else {}
            deps[name] = set(model.get("depends_on") or {}) & running
        levels: list[set[str]] = []
        remaining = set(running)
        while remaining:
            needed = {d for name in remaining for d in deps[name] if d != name}
            level = remaining - needed or set(remaining)  # a cycle: stop the rest at once
            levels.append(level)
            remaining -= level
        return levels

    def _sweep(self) -> None:
        for _ in range(3):
            self.cgroups.cleanup()
            if kill_instance_processes(self.instance_id, signal.SIGKILL) == 0:
                break
        self._sweep_containers(keep=set())

    def _sweep_containers(self, keep: set[str]) -> None:
        """Remove this instance's containers (by label) of replicas not in `keep`; only
        when an app ever ran one, so an app of processes never needs Docker."""
        if self.store.get_meta(containers.IMAGES_KEY) is None:
            return
        try:
            binary = container_cli.runtime()
        except container_cli.RuntimeMissing:
            return
        removed = container_cli.remove_labelled(
            {f"{container_cli.LABEL}.instance": self.instance_id}, keep, binary)
        if removed:
            self.store.add_event("replica.lost", f"removed {len(removed)} container(s) of "
                                 f"replicas that no longer exist: {', '.join(removed)}")

    async def detach(self) -> None:
        """Exit the daemon but leave replicas and the proxy running (for upgrades)."""
        self._shutting_down = True
        self._stopped.set()
        self.wake()

    @property
    def shutting_down(self) -> bool:
        """`down` or `detach` has begun: nothing is started again from here on."""
        return self._shutting_down

    def close(self) -> None:
        self._collector_task.cancel()
        self._held_task.cancel()
        self.collector.poll_once()
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def status(self) -> dict[str, Any]:
        want = ready = 0
        for name, desired in self.store.desired().items():
            if desired.kind != "service":
                continue
            targets, _ = self.rollouts.targets(name, desired)
            for target in targets:
                want += target.replicas
                ready += min(target.replicas, sum(
                    1 for m in self.book.of_service(name)
                    if m.record.subset == target.subset and m.ready
                    and m.record.release == target.release))
        return {"app": self.app_name(), "pid": os.getpid(), "instance": self.instance_id,
                "desired_replicas": want, "ready_replicas": ready,
                "jobs": self.jobs.summary(), "started_at": self.started_at,
                "shutting_down": self._shutting_down,
                "store": self.store.health.as_json(), "apply_error": self.apply_error,
                "manifest": self.app_config().get("manifest"),
                "cgroups": self.cgroups.describe() if hasattr(self.cgroups, "describe")
                else {}}


def _gateway_config(loaded: LoadedManifest) -> dict[str, Any]:
    """The gateway as the app config keeps it: certificate *paths* only (absolute)."""
    gw = loaded.manifest.gateway
    out: dict[str, Any] = {"bind": gw.bind, "port": gw.port}
    if gw.max_connections_per_client is not None:
        out["max_connections_per_client"] = gw.max_connections_per_client
    tls = tls_config(loaded)
    if tls is not None:
        out["tls"] = tls
    return out


def _route_limits(route: Route) -> dict[str, Any]:
    """A route's limits as the app config keeps them (the manifest's form; only the keys
    written, so an app without limits keeps the config it had)."""
    out: dict[str, Any] = {}
    if route.rate_limit is not None:
        out["rate_limit"] = route.rate_limit.model_dump(mode="json")
    if route.max_body_size is not None:
        out["max_body_size"] = route.max_body_size
    return out


def _app_changes(old: dict[str, Any], new: dict[str, Any]) -> list[AppliedChange]:
    """Changes that make no release but do change what runs: the gateway and routes."""
    if not old:
        return []
    out = []
    if old.get("gateway") != new.get("gateway"):
        was, now = old.get("gateway") or {}, new["gateway"]
        https = f", https on {now['tls']['port']}" if now.get("tls") else ""
        out.append(AppliedChange("gateway", 0, False, f"now on {now['bind']}:{now['port']}"
                                 f"{https} (was {was.get('bind')}:{was.get('port')})"))
    if old.get("tracing") != new.get("tracing"):
        now = new.get("tracing")
        out.append(AppliedChange("tracing", 0, False, "off" if now is None else
                                 f"{now['sample']:.4g} of new traces sampled, to "
                                 f"{now['endpoint'] or 'the dashboard only'}"))
    if old.get("routes") != new.get("routes"):
        out.append(AppliedChange("routes", 0, False,
                                 f"{len(new.get('routes') or [])} route(s) applied"))
    return out


def read_manifest_path(paths: StatePaths) -> Path | None:
    if not paths.db.exists():
        return None
    store = Store(paths.db)
    try:
        raw = store.get_meta("app_config")
    finally:
        store.close()
    return Path(json.loads(raw)["manifest"]) if raw else None
