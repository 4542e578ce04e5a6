"""The Swarm controller: one background process per app, on the manager node.

`mso deploy --engine swarm` records releases and desired state in `.mso/swarm.db`, then
makes sure this process runs (`python -m mso.engines.swarm.controller --state-dir DIR`).
Every half second, at once when Docker reports that a container of the app started,
exited or changed health (and 0.15, 0.4 and 0.9 s later: Swarm's task state follows the
container by up to a second), and when a rollout's analysis poll is due, it:

1. observes the app's Swarm services and tasks (the Docker API);
2. ticks the shared rollout controller (canary analysis from the gateway's metrics);
3. plans each service (`plan.plan_service`: create, scale, hand off, retire), then acts
   on all of them together (a service whose `depends_on` are met is created in the
   same tick as the others: `started` needs a started container, `healthy` a ready
   task);
4. pushes the route table (task overlay IPs, weights) to the gateway when it changed,
   or when the gateway restarted and lost it.

It is the only writer of Swarm services and of rollout state; the CLI talks to it through
a unix socket (`ctl.py`). If it dies, the app keeps running and the gateway keeps its last
table; the next CLI command starts it again and it resumes from the store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from mso.analysis.relay import GatewayTransport
from mso.controllers.autoscale import Autoscaler
from mso.controllers.rollouts import Member, RolloutController
from mso.controllers.routing import GatewayTls, RouteLimits, RouteView, file_rev, gateway_tls
from mso.controllers.zero import ZeroPolicy, hold_table, watch_held
from mso.releases.ports import port_map
from mso.engines.swarm import names, state
from mso.engines.swarm.gateway import (CONTROL_DIR, gateway_spec, route_table,
                                       service_routing)
from mso.engines.swarm.observe import ServiceObs, not_ready, parse, watched, without_unready
from mso.engines.swarm.plan import Drain, Ensure, Plan, Progress, Remove, Want, plan_service
from mso.engines.problems import REPORT_LOG_LINES
from mso.engines.swarm.logs import replica_logs
from mso.engines.swarm.spec import (AppContext, ReleaseInput, ServiceSpec, digest, service_spec,
                                    supports_start_interval)
from mso.engines.swarm.state import METRICS_KEY, AppConfig, SwarmPaths
from mso.engines.swarm.swap import Swap, plan_swap
from mso.engines.swarm.swarmapi import SwarmApi, SwarmError
from mso.proxy.client import ProxyClient, ProxyError
from mso.store.db import Store
from mso.store.hold import quiet
from mso.store.records import Desired

log = logging.getLogger("mso.swarm.controller")

PERIOD = 0.5
#: After a container of the app started, exited or changed health, the controller ticks
#: at once and again FOLLOW_UP seconds after the event: Swarm's task state follows the
#: container's event by 0.03 to 1 s (measured), and the next step of a deploy (a
#: dependency met, a canary ready) should not wait for the next PERIOD. Few ticks: each
#: costs Docker some CPU, which a loaded machine's task starts need more.
FOLLOW_UP = (0.15, 0.4, 0.9)
NETWORK_CHECK = 5.0  # seconds between two looks at the app's network (one per tick before)
DRAIN_TIMEOUT = 15.0
NO_EJECTION = 2**31 - 1  # consecutive failures before an outlier ejection: never


class SwarmController:
    """Reconciles one app's Swarm services with the store; a `RolloutHost`."""

    def __init__(self, paths: SwarmPaths, api: SwarmApi | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.paths = paths
        self.clock = clock  # wall-clock seconds: a job's deadline survives a restart
        paths.ensure()
        self.store = Store(paths.db)
        self.api = api or SwarmApi()
        self.proxy = ProxyClient(str(paths.gateway_socket), timeout=10.0)
        # Providers are queried from the app's network, through the gateway.
        self.rollouts = RolloutController(self, transport=GatewayTransport(self.proxy.fetch))
        self.autoscaler = Autoscaler(self, self._autoscaled)
        self.obs: dict[tuple[str, str], ServiceObs] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._pushed: dict[str, Any] | None = None
        self._tls_copied: dict[int, str] = {}  # certificate pair -> rev copied for the gateway
        self._version = int(self.store.get_meta("swarm.table_version") or 0)
        self._network_id = ""
        self._network_checked = 0.0  # monotonic time of the last ensure_network
        self._network_for: tuple[str, str] = ("", "")  # (app, network) it was made for
        self._subsets: dict[str, dict[str, str]] = {}  # service -> role -> subset (last plan)
        self._follow_ups: list[float] = []  # monotonic times of the ticks an event asked for
        self._events: Any = None  # the Docker event stream being watched, if any
        self._watching = ""  # the app whose events are watched
        self._watch_failed = False
        self._start_interval: bool | None = None  # read from the engine on first use
        self.converged = False

    # -- RolloutHost --------------------------------------------------------------------
    def members(self, service: str) -> list[Member]:
        out: list[Member] = []
        for role in ("main", "second"):
            obs = self.obs.get((service, role))
            if obs is None:
                continue
            subset = self._subsets.get(service, {}).get(
                role, "stable" if role == "main" else obs.subset)
            out += [Member(subset, t.release, t.ready, t.stopping) for t in obs.live()]
        return out

    async def metrics(self) -> dict[str, Any]:
        return await self.proxy.metrics()

    def relabel(self, service: str, mapping: dict[str, str]) -> None:
        """Nothing to do: the subset of each Swarm service follows the rollout's targets."""

    # -- AutoscaleHost ------------------------------------------------------------------
    def _autoscaled(self) -> dict[str, dict[str, Any]]:
        config = AppConfig.load(self.store)
        return dict(config.autoscale) if config is not None else {}

    def serving(self, service: str) -> int:
        return sum(1 for m in self.members(service) if m.ready and not m.stopping)

    def cpu_seconds(self, service: str) -> dict[str, float] | None:
        return None  # not read from Swarm tasks (support.py refuses the CPU target here)

    def set_replicas(self, service: str, replicas: int) -> None:
        want = self.store.desired()[service]
        self.store.set_desired(Desired(service, "service", want.release, replicas,
                                       want.manifest_replicas))
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        events, self._events = self._events, None
        if events is not None:
            try:
                events.close()
            except Exception:  # already closed by the daemon
                pass

    def changed(self) -> None:
        """A container of the app changed: tick now, and a few times soon after."""
        now = time.monotonic()
        self._follow_ups = sorted({*self._follow_ups, *(now + d for d in FOLLOW_UP)})
        self._wake.set()

    # -- loop ---------------------------------------------------------------------------
    async def run_forever(self) -> None:
        self.rollouts.recover()
        # Scale to zero: the gateway says at once when a request waits for a task.
        held = asyncio.get_running_loop().create_task(watch_held(
            self.proxy.held, self._wake_from_zero,
            lambda: any(ZeroPolicy.from_spec(s) is not None
                        for s in self._autoscaled().values())))
        try:
            await self._loop()
        finally:
            held.cancel()

    def _wake_from_zero(self, waiting: dict[str, int]) -> None:
        if self.autoscaler.wake(waiting):
            self.changed()  # and the follow-up ticks that see the new task start

    async def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                await self.reconcile_once()
            except Exception as exc:
                log.exception("reconcile failed; retrying")
                state.set_json(self.store, state.STATUS_KEY, {
                    "converged": False, "ts": time.time(),
                    "error": f"{type(exc).__name__}: {exc}"})
            self._watch()
            period = self._next_follow_up(time.monotonic())
            due, now = self.rollouts.due(), time.time()
            if due is not None and due > now:  # an analysis poll waits for no period
                period = min(period, due - now)
            try:
                await asyncio.wait_for(self._wake.wait(), period)
            except asyncio.TimeoutError:
                pass
        await self.proxy.close()

    def _next_follow_up(self, now: float) -> float:
        """Seconds until the next tick an event asked for (PERIOD at most); follow-ups
        that a tick has just served (due within 0.05 s) are dropped."""
        self._follow_ups = [t for t in self._follow_ups if t > now + 0.05]
        if not self._follow_ups:
            return PERIOD
        return min(PERIOD, self._follow_ups[0] - now)

    def _watch(self) -> None:
        """Follow the app's container events in a thread (once the app is known), so a
        task that starts, becomes healthy or exits is acted on at once rather than at
        the next PERIOD. Polling stays the source of truth: a lost stream costs only
        speed, and is opened again on a later tick."""
        config = AppConfig.load(self.store)
        if config is None or self._stop.is_set() or (
                self._events is not None and self._watching == config.app):
            return
        loop = asyncio.get_running_loop()
        try:
            events = self.api.container_events(config.app)
        except Exception as exc:
            if not self._watch_failed:
                log.warning("not watching Docker events (%s); polling every %.1fs", exc,
                            PERIOD)
            self._watch_failed = True
            return
        self._events, self._watching = events, config.app

        def follow() -> None:
            try:
                for _ in events:
                    loop.call_soon_threadsafe(self.changed)
            except Exception as exc:  # the daemon restarted, the loop closed
                log.info("Docker event stream ended: %s", exc)
            finally:
                try:
                    loop.call_soon_threadsafe(self._lost, events)
                except RuntimeError:  # the loop is closed: the controller is stopping
                    pass
        threading.Thread(target=follow, name="docker-events", daemon=True).start()

    def _lost(self, events: Any) -> None:
        if self._events is events:
            self._events = None

    async def observe(self) -> None:
        config = AppConfig.load(self.store)
        if config is None:
            return
        services = await asyncio.to_thread(self.api.services, config.app)
        tasks = await asyncio.to_thread(self.api.tasks, [s["ID"] for s in services])
        observed = parse(services, tasks, self._network_id)
        containers = watched(observed)
        if containers:  # readiness after the first ready: the shim's last check says it
            health = await asyncio.to_thread(
                lambda: {c: self.api.container_health(c) for c in containers})
            observed = without_unready(observed, {c for c, h in health.items() if not_ready(h)})
        self.obs = {(o.service, o.role): o for o in observed}

    async def reconcile_once(self) -> None:
        config = AppConfig.load(self.store)
        token = quiet(self.store, time.time())
        if config is None or token is None:
            return
        checked = (config.app, config.network, self._network_checked)
        if checked[:2] != self._network_for or time.monotonic() > checked[2] + NETWORK_CHECK:
            self._network_id = await asyncio.to_thread(self.api.ensure_network, config.app,
                                                       config.network)
            self._network_for, self._network_checked = checked[:2], time.monotonic()
        await self.observe()
        await self.rollouts.tick()
        await self.autoscaler.tick()
        ctx = self._context(config)
        desired = {n: d for n, d in self.store.desired().items() if d.kind == "service"}
        everything = self.store.desired()
        if quiet(self.store, time.time()) != token:
            return  # a deploy began recording releases while this tick observed: next tick
        progress = state.load_progress(self.store)
        weights: dict[str, dict[str, int]] = {}
        busy = False
        # Every service is planned first, then all of them act at once (with the jobs
        # and the gateway): their Docker calls do not depend on one another, and a
        # service created in the same tick as another starts as early.
        acting = [self._job(ctx, name, want) for name, want in everything.items()
                  if want.kind == "job" and self._deps_met(name, want.release, everything)]
        for name, want in desired.items():
            if (name, "main") not in self.obs and not self._deps_met(name, want.release,
                                                                       everything):
                busy = True
                continue
            plan = self._plan(ctx, config, name, want, progress.get(name, Progress()))
            if plan.note:
                log.info("%s: %s", name, plan.note)
            acting.append(self._act(ctx, name, plan))
            progress[name] = plan.progress
            weights[name] = plan.weights
            self._subsets[name] = plan.subsets
            busy = busy or bool(plan.actions) or plan.progress != Progress()
        acting += [self._remove_undesired(desired), self._ensure_gateway(config)]
        await _all(acting)
        pushed = await self._push(config, ctx, desired, weights)
        if pushed:
            state.save_progress(self.store, {k: v for k, v in progress.items() if k in desired})
        self.converged = pushed and not busy and self._settled(desired)
        state.set_json(self.store, state.STATUS_KEY,
                       {"converged": self.converged, "ts": time.time()})

    def _deps_met(self, name: str, release: int, desired: dict[str, Desired]) -> bool:
        """depends_on and jobs' `before`, checked only before a service first starts."""
        rel = self.store.release(name, release)
        if rel is None:
            return False
        deps = dict(rel.spec["model"].get("depends_on") or {})
        for job, want in desired.items():
            if want.kind != "job":
                continue
            job_rel = self.store.release(job, want.release)
            if job_rel is not None and name in (job_rel.spec["model"].get("before") or []):
                deps[job] = "completed"
        for dep, condition in deps.items():
            if dep not in desired:
                continue
            if desired[dep].kind == "job":
                obs = self.obs.get((dep, "job"))
                if obs is None or not obs.completed():
                    return False
            elif not dependency_met(self.obs.get((dep, "main")), condition):
                return False
        return True

    async def _job(self, ctx: AppContext, name: str, want: Desired) -> None:
        rel = self._release_input(ctx, name, want.release)
        spec = service_spec(ctx, rel, "job", 1, "job")
        runs = state.job_runs(self.store)
        run = dict(runs.get(name) or {})
        number = int(run.get("run", 0))
        # A new run of the same release (the last one failed) is a new Swarm service.
        deploy_hash = spec.deploy_hash if number == 0 else digest([spec.deploy_hash, number])
        obs = self.obs.get((name, "job"))
        if run.get("timed_out") and run.get("release") == want.release:
            return  # stopped at its timeout: the next deploy runs it again
        if obs is not None and obs.deploy_hash == deploy_hash:
            await self._job_deadline(ctx.app, name, want, obs, run, rel.spec["model"])
            return
        if obs is not None:
            await asyncio.to_thread(self.api.remove_service, obs.id)
        # One attempt per deploy, as on the other engines (a failed job fails the deploy;
        # the next deploy runs it again).
        template = dict(spec.task_template, RestartPolicy={"Condition": "none",
                                                           "MaxAttempts": 0})
        job = ServiceSpec(spec.name, {**spec.labels, names.LABEL_DEPLOY_HASH: deploy_hash,
                                      names.LABEL_RUN: str(number)},
                          template, 1, spec.endpoint_spec, spec.update_config, spec.refs,
                          deploy_hash)
        extra = {"mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}},
                 "update_config": None}
        await asyncio.to_thread(self._apply, ctx, job, None, extra)
        self._record_run(name, number, {"release": want.release, "run": number,
                                        "since": self.clock()})
        self._event("swarm.job", f"job {name} started (release {want.release})", name)

    def _record_run(self, name: str, number: int, run: dict[str, Any]) -> None:
        """Save a job's run, unless a deploy asked for a new run meanwhile (the next tick
        then replaces this one)."""
        runs = state.job_runs(self.store)
        if int((runs.get(name) or {}).get("run", 0)) == number:
            runs[name] = run
            state.set_json(self.store, state.JOBS_KEY, runs)

    async def _job_deadline(self, app: str, name: str, want: Desired, obs: ServiceObs,
                            run: dict[str, Any], model: dict[str, Any]) -> None:
        """`jobs.*.timeout`: a Swarm job task has no deadline of its own, so the
        controller stops a run that outlives it (its last lines kept for the deploy's
        report) and records why; the deploy waiting for it fails, as on the other engines."""
        timeout = float(model.get("timeout", 300))
        since = run.get("since")
        if obs.completed() or not obs.active() or since is None \
                or run.get("release") != want.release or self.clock() - float(since) < timeout:
            return
        lines = await asyncio.to_thread(
            replica_logs, self.api, app, name, "", REPORT_LOG_LINES, {t.id for t in obs.tasks})
        await asyncio.to_thread(self.api.remove_service, obs.id)
        message = f"timed out after {timeout:g}s (jobs.{name}.timeout)"
        self._record_run(name, int(run.get("run", 0)), dict(run, timed_out=message, logs=lines))
        self._event("swarm.job", f"job {name} {message}: stopped", name)

    def _settled(self, desired: dict[str, Desired]) -> bool:
        for name, want in desired.items():
            main = self.obs.get((name, "main"))
            active = self.rollouts.active(name)
            if active is not None and active.strategy in ("canary", "blue_green"):
                continue
            if main is None or not main.settled_on(want.release, want.replicas):
                return False
            if (name, "second") in self.obs:
                return False
        gateway = self.obs.get((names.GATEWAY, "gateway"))
        return gateway is not None and any(t.ready for t in gateway.tasks)

    # -- planning -----------------------------------------------------------------------
    def _context(self, config: AppConfig) -> AppContext:
        ports: dict[str, int] = state.get_json(self.store, state.PORTS_KEY, {})
        if self._start_interval is None:
            self._start_interval = supports_start_interval(self.api.api_version)
        return AppContext(config.app, config.network, config.base_dir, ports,
                          self._start_interval)

    def _release_input(self, ctx: AppContext, service: str, number: int) -> ReleaseInput:
        rel = self.store.release(service, number)
        if rel is None:
            raise SwarmError(f"{service} has no release {number}")
        image = state.image_for(self.store, service, number)
        if image is None:
            raise SwarmError(f"no image recorded for {service}; run mso deploy --engine swarm")
        deps: dict[str, tuple[str, int]] = {}
        for dep in rel.spec["model"].get("depends_on") or {}:
            latest = self.store.latest_release(dep)
            if latest is None or latest.spec.get("kind") != "service":
                continue
            named = port_map(latest.spec["model"])
            chosen = next((n for n, (p, _) in named.items() if p == "http"), None)
            chosen = chosen or next(iter(named), None)
            key = f"{dep}/{chosen}"
            if chosen is not None and key in ctx.stable_ports:
                deps[dep] = (named[chosen][0], ctx.stable_ports[key])
        secrets = {k: v.encode("utf-8", "surrogateescape")
                   for k, v in self.store.release_secrets(service, number).items()}
        return ReleaseInput(service, number, rel.spec_hash, rel.spec, image[0], image[1],
                            secrets, deps)

    def _spec(self, ctx: AppContext, service: str, release: int, role: str,
              replicas: int, subset: str) -> ServiceSpec:
        rel = self._release_input(ctx, service, release)
        return service_spec(ctx, rel, "second" if role == "second" else "main", replicas,
                            subset)

    def _plan(self, ctx: AppContext, config: AppConfig, name: str, want: Desired,
              progress: Progress) -> Plan:
        targets, weights = self.rollouts.targets(name, want)
        stable_t = next(t for t in targets if t.subset == "stable")
        other_t = next((t for t in targets if t.subset != "stable"), None)
        stable = self._want(ctx, name, "main", stable_t.release, stable_t.replicas, "stable")
        standin = self._want(ctx, name, "second", stable_t.release, stable_t.replicas,
                             other_t.subset if other_t else "canary")
        second = None if other_t is None else self._want(
            ctx, name, "second", other_t.release, other_t.replicas, other_t.subset)
        previous_t = next((t for t in targets if t.subset == "previous"), None)
        swap = None if previous_t is None else Swap(
            self._want(ctx, name, "main", previous_t.release, previous_t.replicas, "previous"),
            self._want(ctx, name, "second", stable_t.release, stable_t.replicas, "stable"))
        main, other = self.obs.get((name, "main")), self.obs.get((name, "second"))
        swapping = plan_swap(swap, stable, standin, weights, main, other, progress)
        if swapping is not None:
            return swapping
        recreate = config.strategies.get(name) == "recreate"
        return plan_service(stable, second, weights, standin, main, other, progress, recreate)

    def _want(self, ctx: AppContext, name: str, role: str, release: int, replicas: int,
              subset: str) -> Want:
        spec = self._spec(ctx, name, release, role, replicas, subset)
        return Want(release, replicas, subset, spec.deploy_hash)

    # -- acting -------------------------------------------------------------------------
    async def _act(self, ctx: AppContext, name: str, plan: Plan) -> None:
        for action in plan.actions:
            obs = self.obs.get((name, action.role))
            if isinstance(action, Drain):
                await self._drain(obs)
            elif isinstance(action, Remove):
                if obs is not None:
                    await asyncio.to_thread(self.api.remove_service, obs.id)
                    self._event("swarm.removed", f"removed {obs.name}", name)
            elif isinstance(action, Ensure):
                w = action.want
                spec = self._spec(ctx, name, w.release, action.role, w.replicas, w.subset)
                await asyncio.to_thread(self._apply, ctx, spec, obs)
                verb = "created" if obs is None else "updated"
                self._event(f"swarm.{verb}", f"{verb} {spec.name}: release {w.release}, "
                            f"{w.replicas} replicas, subset {w.subset}", name)

    def _apply(self, ctx: AppContext, spec: ServiceSpec, obs: ServiceObs | None,
               extra: dict[str, Any] | None = None) -> None:
        ids = self.api.ensure_refs(ctx.app, spec.refs)
        existing = None
        if obs is not None:
            existing = self.api.api.inspect_service(obs.id)
        self.api.apply(spec, ids, existing, extra)

    async def _drain(self, obs: ServiceObs | None) -> None:
        if obs is None:
            return
        ids = [names.endpoint_id(obs.service, obs.role, t.slot, t.id) for t in obs.tasks
               if t.address is not None]

        async def one(endpoint: str) -> None:
            client = ProxyClient(str(self.paths.gateway_socket), timeout=5.0)
            try:
                await client.drain(endpoint, DRAIN_TIMEOUT)
            except ProxyError as exc:
                log.warning("drain of %s failed: %s", endpoint, exc)
            finally:
                await client.close()
        await asyncio.gather(*(one(i) for i in ids))

    async def _remove_undesired(self, desired: dict[str, Desired]) -> None:
        for (service, role), obs in list(self.obs.items()):
            if role not in ("gateway", "job") and service not in desired:
                await asyncio.to_thread(self.api.remove_service, obs.id)
                self._event("swarm.removed", f"removed {obs.name}: not in the manifest", service)

    async def _ensure_gateway(self, config: AppConfig) -> None:
        spec, extra = gateway_spec(config.app, config.gateway_image, config.network,
                                   config.gateway_port, str(self.paths.gateway_dir),
                                   self.api.node_id, config.published_ports)
        obs = self.obs.get((names.GATEWAY, "gateway"))
        if obs is not None and obs.deploy_hash == spec.deploy_hash:
            return
        ctx = self._context(config)
        if obs is None:  # a table saved by an earlier gateway of this app names old tasks
            (self.paths.gateway_dir / "table.json").unlink(missing_ok=True)
        await asyncio.to_thread(self._apply, ctx, spec, obs, extra)
        self._pushed = None  # a new gateway task starts with an empty table
        self._event("swarm.gateway", f"gateway {'created' if obs is None else 'updated'} "
                    f"on port {config.gateway_port}", None)

    # -- the gateway's table ------------------------------------------------------------------
    def table(self, config: AppConfig, ctx: AppContext, desired: dict[str, Desired],
              weights: dict[str, dict[str, int]]) -> dict[str, Any]:
        routings = []
        for name, want in desired.items():
            rel = self.store.release(name, want.release)
            if rel is None:
                continue
            observed = [o for o in (self.obs.get((name, "main")), self.obs.get((name, "second")))
                        if o is not None]
            routings.append(service_routing(name, rel.spec["model"], ctx.stable_ports,
                                            observed, weights.get(name, {"stable": 100}),
                                            self._subsets.get(name), self._preview_port(name),
                                            hold=hold_table(config.autoscale.get(name))))
        routes = []
        for r in config.routes:
            rel = self.store.release(r["service"], desired[r["service"]].release) \
                if r["service"] in desired else None
            port = r.get("port") or (_first_http(rel.spec["model"]) if rel else None)
            if port:
                routes.append(RouteView(r.get("path") or "/", r.get("host"), r["service"], port,
                                        RouteLimits.of(r)))
        built = route_table(gateway_port=config.gateway_port,
                            metrics_port=ctx.stable_ports.get(METRICS_KEY, 19999),
                            routes=routes, services=routings, tls=self._gateway_tls(config),
                            max_client_connections=config.max_connections_per_client)
        for name in desired:
            active = self.rollouts.active(name)
            if active is None or active.strategy != "canary":
                continue
            # The canary analysis must see the canary's errors: ejecting its task (one
            # replica, often) would starve the analysis of samples and hold a bad canary
            # for as long as the ejections last. Retries still spare the clients.
            for cname, cluster in built["clusters"].items():
                if cname.split("/", 1)[0] == name:
                    cluster["outlier"] = {"consecutive_failures": NO_EJECTION}
        return built

    def _gateway_tls(self, config: AppConfig) -> GatewayTls | None:
        """`gateway.tls` for the gateway: each certificate pair copied into the gateway's
        bind-mounted folder (where the container reads it) whenever its files change.

        The gateway task is pinned to this node, so the folder is the one way in that
        keeps hot reload: a Docker secret cannot change, and a new one would mean a new
        gateway task (a restart, with refused connections). The copies are owner-only in
        mso's 0700 state folder; the table names them and carries each pair's `rev`, so
        the proxy reloads them, without closing a connection, when a pair changes."""
        raw = config.tls
        if not raw:
            return None
        folder = self.paths.gateway_dir / "tls"
        folder.mkdir(mode=0o700, exist_ok=True)
        paths = []
        for i, pair in enumerate(raw["certificates"]):
            rev = file_rev(pair["cert"], pair["key"])
            inside = (f"{CONTROL_DIR}/tls/{i}.crt", f"{CONTROL_DIR}/tls/{i}.key")
            paths.append(inside)
            if self._tls_copied.get(i) == rev:
                continue
            try:
                for source, name in ((pair["cert"], f"{i}.crt"), (pair["key"], f"{i}.key")):
                    _copy_private(Path(source), folder / name)
            except OSError as exc:  # the gateway keeps the copy it has
                self._event("gateway.tls_error", f"cannot copy the certificate "
                            f"{pair['cert']} for the gateway: {exc.strerror or exc}", None)
                continue
            if i in self._tls_copied:
                self._event("gateway.tls_reloaded", f"gateway certificate {pair['cert']} "
                            "reloaded: new TLS connections get it, open ones keep theirs",
                            None)
            self._tls_copied[i] = rev
        return gateway_tls(raw, paths)

    def _preview_port(self, service: str) -> int | None:
        active = self.rollouts.active(service)
        if active is None or active.strategy != "blue_green":
            return None
        port = self.rollouts.spec(service, active.to_release).get("preview_port")
        return None if port is None else int(port)

    async def _push(self, config: AppConfig, ctx: AppContext, desired: dict[str, Desired],
                    weights: dict[str, dict[str, int]]) -> bool:
        table = self.table(config, ctx, desired, weights)
        fetch = self.rollouts.provider_urls()
        if fetch:  # what the gateway may request for the analysis (mso.proxy.fetch)
            table["fetch"] = fetch
        try:
            ping = await self.proxy.ping()
            if self._pushed is not None and int(ping.get("version") or 0) < self._version:
                self._pushed = None  # the gateway restarted with an empty table
            if table == self._pushed:
                return True
            self._version += 1
            await self.proxy.set_table(dict(table, version=self._version))
        except (ProxyError, OSError) as exc:
            log.info("gateway not reachable yet: %s", exc)
            return False
        self._pushed = table
        self.store.set_meta("swarm.table_version", str(self._version))
        state.set_json(self.store, state.TABLE_KEY, table)
        return True

    def _event(self, type_: str, message: str, service: str | None) -> None:
        log.info("%s %s", service or "-", message)
        self.store.add_event(type_, message, service)


def _copy_private(source: Path, dest: Path) -> None:
    """Copy a file owner-only, replacing `dest` in one step (a new inode: the proxy never
    reads half a key)."""
    tmp = dest.with_name(dest.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(source.read_bytes())
    os.replace(tmp, dest)


async def _all(work: list[Coroutine[Any, Any, None]]) -> None:
    """Run every coroutine to its end, together; then raise the first error, if any (a
    failed create must not leave the others half-awaited)."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def dependency_met(main: ServiceObs | None, condition: str) -> bool:
    """A service's `depends_on` condition on Swarm, as the local engine reads it:
    `started` once a task's container runs (Swarm's `starting`: its healthcheck has not
    passed yet; or `running`), `healthy` once a task is ready,
    `completed` once a task has exited 0 (a service under `restart: on-failure | never`;
    a job's completion is read from its own Swarm service)."""
    if main is None:
        return False
    if condition == "completed":
        return main.completed()
    if condition == "started":
        return any(t.state in ("starting", "running") and not t.stopping for t in main.tasks)
    return any(t.ready for t in main.tasks)


def _first_http(model: dict[str, Any]) -> str | None:
    return next((n for n, (p, _) in port_map(model).items() if p == "http"), None)
