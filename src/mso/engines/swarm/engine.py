"""`SwarmEngine`: the `RemoteEngine` the CLI drives for `--engine swarm`.

Commands that change what should run (deploy, scale, rollback, rollout control) write the
store and ask the controller process (`controller.py`) to act; commands that only read
(ps, endpoints, logs, releases) go to the Docker API and the store directly. Shapes are the
local engine's (MANIFEST.md).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mso.controllers.autoscale import refuse_autoscaled
from mso.controllers.autoscale import status as autoscale_status
from mso.controllers.routing import tls_config
from mso.releases.apply import apply_manifest
from mso.releases.rollback import rollback_target
from mso.engines import images
from mso.engines.problems import READY_ALLOWANCE, REPORT_LOG_LINES, Problem
from mso.engines.remote import UP_AFTER, DeployFailed, EngineOptions, failing_replica
from mso.engines.swarm import names, state
from mso.engines.swarm.ctl import ControllerClient
from mso.engines.swarm.logs import follow_logs, replica_logs
from mso.engines.swarm.releases import record_builds
from mso.engines.swarm.render import render_stack
from mso.engines.swarm.state import AppConfig, SwarmPaths, ensure_stable_ports
from mso.engines.swarm.status import (endpoints_view, job_rows, ps_view, replica_rows,
                                     rollback_rows)
from mso.engines.swarm.swarmapi import SwarmApi, SwarmError
from mso.ports import port_holder
from mso.spec.load import LoadedManifest
from mso.store.db import Store
from mso.store.follow import read_events
from mso.store.hold import hold
from mso.store.records import Desired

DEPLOY_TIMEOUT = 300.0
ERROR_GRACE = 15.0  # transient errors (a network still in use) clear up by themselves
WAIT_POLL = 0.1  # seconds between two looks at the controller's status while deploying
WAIT_LOOK = 0.5  # seconds between two reads of every replica from Docker


class SwarmEngine:
    def __init__(self, options: EngineOptions | None = None) -> None:
        self.options = options or EngineOptions()

    @staticmethod
    def _store(loaded: LoadedManifest) -> tuple[SwarmPaths, Store]:
        paths = SwarmPaths.for_manifest(loaded.path)
        paths.ensure()
        return paths, Store(paths.db)

    # -- deploy -----------------------------------------------------------------------------
    def deploy(self, loaded: LoadedManifest, wait: bool = True,
               force: bool = False) -> dict[str, Any]:
        api = SwarmApi()
        m = loaded.manifest
        paths, store = self._store(loaded)
        try:
            # checks that can refuse the deploy come before any release is recorded
            previews = preview_ports(loaded)
            check_published_ports(api, m.app, published_ports(loaded))
            ensure_stable_ports(store, {n: s.model_dump(mode="json")
                                        for n, s in m.services.items()},
                                m.gateway.port, set(previews))
            ctl = ControllerClient(paths)
            ctl.start()  # Python starts and imports while the images are checked
            try:
                built = self._images(loaded, api)
            except SwarmError:
                if not store.desired():  # nothing for the controller we started to run
                    ctl.stop()
                raise
            with hold(store):
                before = store.desired()
                changes = record_builds(store, apply_manifest(store, loaded, force=force), built)
                state.rerun_jobs(store, failed_jobs(api, store))
                for change in changes:
                    if change.created:
                        store.add_event("release.created", f"release {change.release}: "
                                        f"{change.change}", change.service,
                                        data={"release": change.release})
                AppConfig(app=m.app, manifest=str(loaded.path), base_dir=str(loaded.base_dir),
                          network=names.network_name(m.app, m.engines.swarm.network),
                          gateway_port=m.gateway.port, gateway_image=built["\0gateway"][0],
                          routes=[r.model_dump(mode="json") for r in m.routes],
                          strategies={n: s.rollout.strategy for n, s in m.services.items()},
                          preview_ports=previews, tls=tls_config(loaded),
                          max_connections_per_client=m.gateway.max_connections_per_client or 0,
                          autoscale={n: s.autoscale.model_dump(mode="json")
                                     for n, s in m.services.items()
                                     if s.autoscale is not None}).save(store)
                ctl.ensure_running()
                for name, want in store.desired().items():
                    old = before.get(name)
                    if want.kind == "service" and old is not None \
                            and old.release != want.release:
                        ctl.call({"op": "begin", "service": name, "from": old.release,
                                  "to": want.release})
            ctl.call({"op": "wake"})
            if wait:
                self._wait_converged(store, ctl, api, m.app)
        finally:
            store.close()
        return {"app": m.app, "engine": "swarm", "gateway": f"127.0.0.1:{m.gateway.port}",
                "changes": [{"service": c.service, "release": c.release,
                             "created": c.created, "change": c.change} for c in changes]}

    def _images(self, loaded: LoadedManifest, api: SwarmApi) -> dict[str, tuple[str, bool]]:
        try:
            built = {"\0gateway": (images.ensure_gateway_image(api.client, proxy_only=True),
                                        False)}
            for name in [*loaded.manifest.services, *loaded.manifest.jobs]:
                built[name] = (images.build_service_image(loaded, name, api.client),
                               images.uses_shim(loaded, name))
        except images.ImageError as exc:
            raise SwarmError(str(exc)) from exc
        return built

    def _wait_converged(self, store: Store, ctl: ControllerClient, api: SwarmApi,
                        app: str) -> None:
        """Until the controller reports the app converged and every replica counts as
        up; a replica of a desired release with a problem ends the wait (DeployFailed)."""
        started = time.time()
        deadline = time.monotonic() + DEPLOY_TIMEOUT
        failing_since: float | None = None
        looked = 0.0  # when replicas were last read from Docker
        while time.monotonic() < deadline:
            status = state.get_json(store, state.STATUS_KEY, {})
            fresh = float(status.get("ts", 0)) > started
            # The controller's status is one read of the store: looked at often, so the
            # deploy returns within WAIT_POLL of converging; the replicas (a dozen
            # Docker calls) every WAIT_LOOK, or at once when the controller says done.
            if not (status.get("converged") and fresh) and \
                    time.monotonic() - looked < WAIT_LOOK:
                time.sleep(WAIT_POLL)
                continue
            looked = time.monotonic()
            rows, unprobed = replica_rows(api, app, time.time())
            desired = store.desired()
            wanted = {n: d.release for n, d in desired.items() if d.kind == "service"}
            # Like Kubernetes' waves: a failing readiness probe counts only once the
            # deploy itself has waited READY_ALLOWANCE (a dependency may be coming back).
            judged = time.time() >= started + READY_ALLOWANCE
            failing = [r for r in rows
                       if r["problem"] and wanted.get(r["service"]) == r["release"]
                       and (judged or r["problem"]["kind"] != "not_ready")]
            failing += job_rows(api, app, {n: d.release for n, d in desired.items()
                                           if d.kind == "job"}, state.current_runs(store))
            if not failing:
                failing = rollback_rows(api, app, wanted)
            stopped = timed_out_jobs(store, desired)
            if failing or stopped:
                raise DeployFailed([failing_replica(r, replica_logs(
                    api, app, r["service"], r["replica"], REPORT_LOG_LINES,
                    set(r["tasks"]) if "tasks" in r else None)) for r in failing]
                    + [failing_replica(r, r.pop("logs")) for r in stopped])
            young = [task for task, age in unprobed.items() if age < UP_AFTER]
            # The controller's verdict is from its last observation; what runs now must
            # agree (Swarm may have rolled an update back since).
            settling = [r for r in rows if r["service"] in wanted
                        and r["state"] not in ("READY", "STOPPING")]
            if status.get("converged") and fresh and not young and not settling:
                return
            if fresh and status.get("error"):
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > ERROR_GRACE:
                    raise SwarmError(f"deploy failed: {status['error']}")
            elif fresh:
                failing_since = None
            ctl.call({"op": "ping"})  # fails loudly if the controller died
            time.sleep(WAIT_POLL)
        raise SwarmError(f"the app did not become ready within {DEPLOY_TIMEOUT:.0f}s; "
                         "see `mso ps --engine swarm` and `mso logs --engine swarm`")

    # -- reading ----------------------------------------------------------------------------
    def render(self, loaded: LoadedManifest, out_dir: Path | None) -> list[Path] | str:
        text = render_stack(loaded)
        if out_dir is None:
            return text
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"{loaded.manifest.app}-stack.yml"
        target.write_text(text)
        return [target]

    def ps(self, loaded: LoadedManifest) -> dict[str, Any]:
        view = ps_view(SwarmApi(), loaded.manifest.app)
        if SwarmPaths.for_manifest(loaded.path).db.exists():
            _, store = self._store(loaded)
            try:
                config = AppConfig.load(store)
                if config is not None and config.autoscale:
                    view["autoscale"] = autoscale_status(store, config.autoscale)
            finally:
                store.close()
        return view

    def endpoints(self, loaded: LoadedManifest) -> dict[str, Any]:
        _, store = self._store(loaded)
        try:
            return endpoints_view(store, loaded.manifest)
        finally:
            store.close()

    def logs(self, loaded: LoadedManifest, service: str | None, follow: bool,
             since: float | None, tail: int | None) -> Iterator[dict[str, Any]]:
        if service is not None and service not in loaded.manifest.services \
                and service not in loaded.manifest.jobs:
            raise SwarmError(f"no service or job named {service!r}")
        return follow_logs(SwarmApi(), loaded.manifest.app, service, follow, since, tail)

    def events(self, loaded: LoadedManifest, service: str | None, follow: bool,
               tail: int) -> Iterator[dict[str, Any]]:
        paths = SwarmPaths.for_manifest(loaded.path)
        if not paths.db.exists():
            raise SwarmError(f"{loaded.manifest.app} was never deployed to Swarm from here; "
                             "run `mso deploy --engine swarm` first")
        return read_events(paths.db, service, follow, tail)

    def releases(self, loaded: LoadedManifest, service: str) -> list[dict[str, Any]]:
        _, store = self._store(loaded)
        try:
            desired = store.desired().get(service)
            return [{"number": r.number, "spec_hash": r.spec_hash,
                     "created": dt.datetime.fromtimestamp(r.created, dt.timezone.utc)
                     .isoformat(timespec="seconds"), "author": r.author, "change": r.change,
                     "outcome": r.outcome,
                     "current": desired is not None and desired.release == r.number}
                    for r in store.releases(service)]
        finally:
            store.close()

    # -- changing -----------------------------------------------------------------------------
    def scale(self, loaded: LoadedManifest, service: str, replicas: int) -> None:
        paths, store = self._store(loaded)
        try:
            want = store.desired().get(service)
            if want is None or want.kind != "service":
                raise SwarmError(f"no deployed service named {service!r}")
            config = AppConfig.load(store)
            refuse_autoscaled(config.autoscale if config else {}, service, want.replicas)
            store.set_desired(Desired(service, "service", want.release, replicas,
                                      want.manifest_replicas))
            store.add_event("service.scaled", f"scaled to {replicas}", service,
                            data={"replicas": replicas})
        finally:
            store.close()
        ctl = ControllerClient(paths)
        ctl.ensure_running()
        ctl.call({"op": "wake"})

    def rollback(self, loaded: LoadedManifest, service: str, to: int | None) -> int:
        paths, store = self._store(loaded)
        ctl = ControllerClient(paths)
        ctl.ensure_running()
        try:
            with hold(store):
                want = store.desired().get(service)
                if want is None or want.kind != "service":
                    raise SwarmError(f"no deployed service named {service!r}")
                current = store.release(service, want.release)
                assert current is not None
                target = rollback_target(  # a Swarm release is its spec and its image
                    store.releases(service), current, to,
                    lambda number: state.image_for(store, service, number))
                status = ctl.call({"op": "rollout", "action": "status", "service": service})
                if status["status"].get("phase") in ("Progressing", "Paused", "Inconclusive"):
                    ctl.call({"op": "rollout", "action": "abort", "service": service})
                    want = store.desired()[service]
                new = store.add_release(service, target.spec_hash, target.spec,
                                        store.release_secrets(service, target.number), "mso",
                                        f"rollback to release {target.number}")
                image = state.image_for(store, service, target.number)
                if image is not None:
                    state.record_image(store, service, new.number, *image)
                store.set_desired(Desired(service, "service", new.number, want.replicas,
                                          want.manifest_replicas))
                store.add_event("release.created", f"release {new.number}: rollback to "
                                f"release {target.number}", service,
                                data={"release": new.number})
                ctl.call({"op": "begin", "service": service, "from": want.release,
                          "to": new.number, "strategy": "rolling"})
        finally:
            store.close()
        ctl.call({"op": "wake"})
        return new.number

    def state_store(self, loaded: LoadedManifest) -> Store:
        paths = SwarmPaths.for_manifest(loaded.path)
        if not paths.db.exists():
            raise SwarmError(f"{loaded.manifest.app} was never deployed to Swarm from here; "
                             "run `mso deploy --engine swarm` first")
        return Store(paths.db)

    def metrics(self, loaded: LoadedManifest) -> dict[str, Any]:
        ctl = ControllerClient(SwarmPaths.for_manifest(loaded.path))
        ctl.ensure_running()
        snapshot: dict[str, Any] = ctl.call({"op": "metrics"}, timeout=10.0)["metrics"]
        return snapshot

    def rollout(self, loaded: LoadedManifest, action: str, service: str) -> dict[str, Any]:
        ctl = ControllerClient(SwarmPaths.for_manifest(loaded.path))
        ctl.ensure_running()
        status: dict[str, Any] = ctl.call({"op": "rollout", "action": action,
                                           "service": service})["status"]
        return status

    def down(self, loaded: LoadedManifest) -> None:
        api = SwarmApi()
        paths, store = self._store(loaded)
        try:
            ControllerClient(paths).stop()
            api.remove_app(loaded.manifest.app)
            store.clear_desired()
            for service in store.services_with_releases():
                store.delete_rollout(service)
            for key in (state.PROGRESS_KEY, state.TABLE_KEY, state.STATUS_KEY,
                        state.APP_KEY, state.JOBS_KEY):
                store.delete_meta(key)
            store.add_event("app.down", "removed every Swarm object mso created")
        finally:
            store.close()
        paths.gateway_socket.unlink(missing_ok=True)


def failed_jobs(api: SwarmApi, store: Store) -> set[str]:
    """The desired jobs whose run of their release failed or was stopped at its timeout:
    the deploy runs them again (as the local engine does), instead of reporting the old
    failure for ever."""
    desired = {n: d.release for n, d in store.desired().items() if d.kind == "job"}
    app = AppConfig.load(store)
    failed = {str(r["service"]) for r in job_rows(api, app.app, desired,
                                                   state.current_runs(store))} if app else set()
    return failed | {r["service"] for r in timed_out_jobs(store, store.desired())}


def timed_out_jobs(store: Store, desired: dict[str, Desired]) -> list[dict[str, Any]]:
    """Rows (ps fields, and the `logs` kept) of the desired jobs the controller stopped at
    their `jobs.*.timeout`."""
    out = []
    for job, run in state.job_runs(store).items():
        want = desired.get(job)
        if not run.get("timed_out") or want is None or want.release != run.get("release"):
            continue
        out.append({"service": job, "replica": job, "release": want.release,
                    "state": "FAILED", "reason": run["timed_out"],
                    "problem": Problem("failed", run["timed_out"]).to_json(),
                    "logs": list(run.get("logs") or [])})
    return out


def published_ports(loaded: LoadedManifest) -> dict[int, str]:
    """The ports the gateway publishes on this machine -> the manifest key naming each."""
    out = {loaded.manifest.gateway.port: "gateway.port"}
    for name, svc in loaded.manifest.services.items():
        if svc.rollout.strategy == "blue_green" and svc.rollout.preview_port is not None:
            out.setdefault(svc.rollout.preview_port, f"services.{name}.rollout.preview_port")
    if loaded.manifest.gateway.tls is not None:
        out.setdefault(loaded.manifest.gateway.tls.port, "gateway.tls.port")
    return out


def check_published_ports(api: SwarmApi, app: str, ports: dict[int, str]) -> None:
    """Refuse a gateway or preview port that something else holds, before anything is
    created: Swarm would accept the service and then fail its task for ever ("bind:
    address already in use"), leaving the deploy to time out. A port the app's own
    gateway already publishes is its own."""
    published = api.published_ports()
    gateway = names.service_name(app, names.GATEWAY, "gateway")
    for port, key in sorted(ports.items()):
        owner = published.get(port)
        holder = port_holder(port)
        if owner == gateway and (holder is None or "docker-proxy" in holder
                                 or "dockerd" in holder):
            continue  # published by Docker for this app's gateway already
        if owner is not None and owner != gateway:
            raise SwarmError(f"{key} {port} is already published by the Swarm service "
                             f"{owner}; choose another port or remove that service")
        if holder is not None:
            raise SwarmError(f"{key} {port} is already in use on this machine by {holder}; "
                             "stop it or choose another port")


def preview_ports(loaded: LoadedManifest) -> list[int]:
    """The blue/green preview ports the gateway publishes (the manifest already refuses one
    that clashes with the gateway port or another service's)."""
    return sorted({svc.rollout.preview_port for svc in loaded.manifest.services.values()
                   if svc.rollout.strategy == "blue_green"
                   and svc.rollout.preview_port is not None})
