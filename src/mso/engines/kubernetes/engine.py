"""`KubernetesEngine`: the CLI's RemoteEngine for `--engine kubernetes`.

`render` needs no cluster (and builds no image); every other command talks to the API
server through `kube.Kube` and keeps releases in `.mso/kubernetes.db` beside the
manifest. Rollouts run in the background controller (`controller`), started when one
begins; `mso rollout` commands change the rollout state in the store, which that
controller reads every tick.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mso.controllers.autoscale import refuse_autoscaled
from mso.controllers.autoscale import status as autoscale_status
from mso.controllers.rollouts import RolloutError
from mso.releases.ports import port_map
from mso.engines import images
from mso.engines.kubernetes import (controller, deploy, document, failures, naming, state,
                                    views)
from mso.engines.kubernetes.control import ControlError
from mso.engines.kubernetes.host import KubeHost, effective_weights
from mso.engines.kubernetes.kube import Kube, KubeError
from mso.engines.kubernetes.versions import VersionError, api_versions
from mso.engines.remote import DeployFailed, EngineOptions, RemoteEngineError
from mso.spec.load import LoadedManifest
from mso.store.db import Store
from mso.store.follow import read_events
from mso.store.hold import hold
from mso.store.records import Desired


class KubernetesEngine:
    def __init__(self, options: EngineOptions) -> None:
        self.options = options

    # -- render ---------------------------------------------------------------------------
    def render(self, loaded: LoadedManifest, out_dir: Path | None) -> list[Path] | str:
        try:
            api = api_versions(self.options.version)
        except VersionError as exc:
            # Bad usage, not an engine failure: the CLI exits 2 for click's usage errors.
            import click
            raise click.BadParameter(str(exc), param_hint="'--version'") from exc
        imgs = render_images(loaded)
        objects = document.manifest_objects(loaded, api, imgs, self._release_numbers(loaded),
                                            document.namespace_of(loaded, self.options.namespace))
        if out_dir is None:
            return document.to_yaml(objects)
        return document.write_files(objects, out_dir)

    def _release_numbers(self, loaded: LoadedManifest) -> dict[str, int]:
        """The release each service would be: the recorded one if unchanged, else the next."""
        store = state.existing_store(loaded.base_dir)
        out: dict[str, int] = {}
        if store is None:
            return out
        try:
            for name in [*loaded.manifest.services, *loaded.manifest.jobs]:
                latest = store.latest_release(name)
                if latest is not None:
                    same = latest.spec_hash == loaded.spec_hash(name)
                    out[name] = latest.number if same else latest.number + 1
        finally:
            store.close()
        return out

    # -- cluster commands -----------------------------------------------------------------
    def _kube(self, settings: state.AppSettings | None = None) -> Kube:
        kubeconfig = self.options.kubeconfig or (settings.kubeconfig if settings else None)
        context = self.options.context or (settings.context if settings else None)
        return Kube(kubeconfig, context)

    def _host(self, loaded: LoadedManifest) -> KubeHost:
        store = state.existing_store(loaded.base_dir)
        settings = state.load_settings(store) if store is not None else None
        if store is None or settings is None:
            raise RemoteEngineError(f"{loaded.manifest.app} was never deployed to Kubernetes "
                                    "from here; run `mso deploy --engine kubernetes` first")
        return KubeHost(store, self._kube(settings), settings)

    def deploy(self, loaded: LoadedManifest, wait: bool = True,
               force: bool = False) -> dict[str, Any]:
        try:
            result = deploy.deploy(loaded, self._kube(), self.options, wait, force=force)
        except images.ImageError as exc:
            raise RemoteEngineError(str(exc)) from exc
        except DeployFailed:
            # Only the waiting ends: a rollout that began goes on (and rolls a failing
            # canary back) in the controller, as after a deploy that returned.
            host = self._host(loaded)
            if any(host.rollouts.active(n) is not None for n in host.store.desired()):
                controller.ensure_running(loaded.base_dir)
            raise
        if result["rollouts"] or any(s.autoscale is not None
                                     for s in loaded.manifest.services.values()):
            controller.ensure_running(loaded.base_dir)
        return result

    def _first_ports(self, host: KubeHost) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for name, want in host.store.desired().items():
            rel = host.store.release(name, want.release)
            ports = port_map(rel.spec["model"]) if rel else {}
            out[name] = next(iter(ports.values()))[1] if ports else None
        return out

    def ps(self, loaded: LoadedManifest) -> dict[str, Any]:
        host = self._host(loaded)
        pods, now = host.pods(), time.time()
        namespace = host.settings.namespace
        view = views.ps(host.settings.app, namespace, pods, self._first_ports(host), now,
                        failures.events_for(host.kube, namespace, pods, now))
        if host.autoscaled():
            view["autoscale"] = autoscale_status(host.store, host.autoscaled())
        return view

    def endpoints(self, loaded: LoadedManifest) -> dict[str, Any]:
        host = self._host(loaded)
        ips = host.subset_hosts()
        stable: dict[str, str | None] = {}
        weights: dict[str, dict[str, int]] = {}
        first = self._first_ports(host)
        for name, want in host.store.desired().items():
            if want.kind != "service":
                continue
            ip = ips.get(name)
            stable[name] = f"{ip}:{first[name]}" if ip and first.get(name) else None
            _, w = host.rollouts.targets(name, want)
            weights[name] = effective_weights(w, {s: 1 for s in w})
        out = views.endpoints(ips.get(naming.GATEWAY), host.settings.gateway_port, stable,
                              host.pods(), weights, first,
                              [r.model_dump(mode="json") for r in loaded.manifest.routes],
                              int(host.settings.tls["port"]) if host.settings.tls else None)
        if host.settings.max_connections_per_client:
            out["max_connections_per_client"] = host.settings.max_connections_per_client
        return out

    def logs(self, loaded: LoadedManifest, service: str | None, follow: bool,
             since: float | None, tail: int | None) -> Iterator[dict[str, Any]]:
        host = self._host(loaded)
        pods = [p for p in host.pods(service)
                if (p["metadata"].get("labels") or {}).get(naming.COMPONENT) != "gateway"]
        if not pods and service is not None and service not in host.store.desired():
            raise RemoteEngineError(f"no service named {service!r}")
        seconds = None if since is None else int(time.time() - since)
        if follow and len(pods) > 1:
            yield from _follow_many(host, pods, seconds, tail)
            return
        for pod in pods:
            yield from _records(host, pod, follow, seconds, tail)

    def scale(self, loaded: LoadedManifest, service: str, replicas: int) -> None:
        host = self._host(loaded)
        want = host.store.desired().get(service)
        if want is None or want.kind != "service":
            raise RemoteEngineError(f"no service named {service!r}")
        refuse_autoscaled(host.autoscaled(), service, want.replicas)
        host.store.set_desired(Desired(service, "service", want.release, replicas,
                                       want.manifest_replicas))
        host.store.add_event("service.scaled", f"scaled to {replicas}", service,
                             data={"replicas": replicas})
        host.reconcile()

    def events(self, loaded: LoadedManifest, service: str | None, follow: bool,
               tail: int) -> Iterator[dict[str, Any]]:
        """The event trail the CLI and the controller recorded (rollout decisions with
        their numbers, scaling, rollbacks), in the local engine's JSON shape."""
        if service is not None and service not in loaded.manifest.services:
            raise RemoteEngineError(f"no service named {service!r}")
        db = state.state_dir(loaded.base_dir) / state.DB_NAME
        if not db.exists():
            raise RemoteEngineError(f"{loaded.manifest.app} was never deployed to Kubernetes "
                                    "from here; run `mso deploy --engine kubernetes` first")
        return read_events(db, service, follow, tail)

    def releases(self, loaded: LoadedManifest, service: str) -> list[dict[str, Any]]:
        host = self._host(loaded)
        found = host.store.releases(service)
        if not found:
            raise RemoteEngineError(f"no releases of {service!r}")
        current = host.store.desired().get(service)
        return [{"number": r.number, "spec_hash": r.spec_hash,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.created)),
                 "outcome": r.outcome, "author": r.author, "change": r.change,
                 "current": current is not None and current.release == r.number}
                for r in found]

    def state_store(self, loaded: LoadedManifest) -> Store:
        store = state.existing_store(loaded.base_dir)
        if store is None:
            raise RemoteEngineError(f"{loaded.manifest.app} was never deployed to Kubernetes "
                                    "from here; run `mso deploy --engine kubernetes` first")
        return store

    def metrics(self, loaded: LoadedManifest) -> dict[str, Any]:
        host = self._host(loaded)
        try:
            return asyncio.run(host.metrics())
        except (ControlError, KubeError, OSError) as exc:
            raise RemoteEngineError(f"the gateway's counters: {exc}") from exc

    def rollback(self, loaded: LoadedManifest, service: str, to: int | None) -> int:
        from mso.engines.kubernetes.rollback import rollback
        host = self._host(loaded)
        try:
            number = rollback(host, service, to)
        except (RolloutError, KeyError) as exc:
            raise RemoteEngineError(str(exc).strip("'")) from exc
        host.reconcile()
        controller.ensure_running(loaded.base_dir)
        return number

    def rollout(self, loaded: LoadedManifest, action: str, service: str) -> dict[str, Any]:
        host = self._host(loaded)
        r = host.rollouts
        try:
            # Under the hold: an abort writes the rollout and then the desired release, and
            # a controller planning in between would pair the old rollout's end with the
            # new release (mso.store.hold).
            with hold(host.store):
                data = r.command(action, service)
        except RolloutError as exc:
            raise RemoteEngineError(str(exc)) from exc
        except KeyError as exc:
            raise RemoteEngineError(f"no service named {service!r}") from exc
        if action != "status":
            controller.ensure_running(loaded.base_dir)
        return data

    def down(self, loaded: LoadedManifest) -> None:
        from mso.engines.kubernetes.teardown import teardown
        controller.stop(loaded.base_dir)
        store = state.existing_store(loaded.base_dir)
        settings = state.load_settings(store) if store is not None else None
        namespace = settings.namespace if settings else document.namespace_of(
            loaded, self.options.namespace)
        teardown(self._kube(settings), loaded.manifest.app, namespace)
        if store is not None:
            store.clear_desired()
            state.set_holding(store, set())
            for name in store.services_with_releases():
                store.delete_rollout(name)


def render_images(loaded: LoadedManifest) -> document.Images:
    """The tags `mso deploy` would build, computed without Docker (the gateway's from the
    proxy wheels already cached on this machine)."""
    base = images.base_image_tag()
    builds = {n: images.build_image_tag(loaded, n)
              for n in [*loaded.manifest.services, *loaded.manifest.jobs]
              if loaded.manifest.runnable(n).build is not None
              and not loaded.manifest.runnable(n).image}
    return document.Images(images.gateway_image_tag(base, images.cached_gateway_wheels()),
                           images.app_image_tag(loaded, base), builds)


def _records(host: KubeHost, pod: dict[str, Any], follow: bool, since: int | None,
             tail: int | None) -> Iterator[dict[str, Any]]:
    for line in host.kube.log_lines(pod["metadata"]["name"], host.settings.namespace, follow,
                                    since, tail):
        yield failures.log_record(pod, line)


def _follow_many(host: KubeHost, pods: list[dict[str, Any]], since: int | None,
                 tail: int | None) -> Iterator[dict[str, Any]]:
    import queue
    import threading
    lines: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()

    def pump(pod: dict[str, Any]) -> None:
        try:
            for record in _records(host, pod, True, since, tail):
                lines.put(record)
        except KubeError as exc:
            lines.put(exc)

    for pod in pods:
        threading.Thread(target=pump, args=(pod,), daemon=True).start()
    while True:
        item = lines.get()
        if isinstance(item, BaseException):
            raise item
        yield item

