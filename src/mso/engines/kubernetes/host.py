"""The Kubernetes side of mso's control loop: the `RolloutHost`, and one reconcile pass.

Reconcile is decide-then-act: `plan()` reads the cluster and the rollout targets and
returns what to apply, which weights the gateway should have, and which subset
Deployments are no longer wanted; `reconcile()` applies the objects, pushes the gateway
table, and only then deletes stale subsets, so no request is routed to a Deployment
being deleted. A subset gets traffic only once it has a ready pod.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mso.analysis.relay import GatewayTransport
from mso.controllers.autoscale import Autoscaler
from mso.controllers.rollouts import Member, RolloutController, SubsetTarget
from mso.releases.ports import port_map
from mso.engines.kubernetes import bluegreen, gateway, handoff, naming, render, state
from mso.engines.kubernetes.control import ControlError, GatewayControl
from mso.engines.kubernetes.kube import Kube
from mso.engines.kubernetes.render import Obj
from mso.engines.kubernetes.versions import api_versions
from mso.engines.kubernetes.workload import Workload, container_workdir, dependencies
from mso.proxy.metrics import tag_snapshots
from mso.store.db import Store
from mso.store.records import Desired

log = logging.getLogger("mso.engines.kubernetes")


@dataclass
class Plan:
    apply: list[Obj] = field(default_factory=list)
    weights: dict[str, dict[str, int]] = field(default_factory=dict)
    stale: list[Obj] = field(default_factory=list)
    targets: dict[str, list[SubsetTarget]] = field(default_factory=dict)
    previews: set[str] = field(default_factory=set)  # services whose preview port is live
    handoffs: set[str] = field(default_factory=set)  # blue/green hand-offs still under way


def pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def effective_weights(weights: dict[str, int], ready: dict[str, int]) -> dict[str, int]:
    """Weights with every subset that has no ready pod folded into stable (pure)."""
    out = {subset: (w if subset == "stable" or ready.get(subset, 0) > 0 else 0)
           for subset, w in weights.items()}
    out["stable"] = out.get("stable", 0) + sum(weights.values()) - sum(out.values())
    if ready.get("stable", 0) == 0 and sum(out.values()) > 0:
        # e.g. the stable Deployment is being replaced during a promotion: keep the
        # traffic where pods are ready.
        live = [s for s in out if ready.get(s, 0) > 0]
        if live:
            out = {s: (100 if s == live[0] else 0) for s in out}
    return out


class KubeHost:
    """RolloutHost for Kubernetes, plus the reconcile loop that realises its targets."""

    def __init__(self, store: Store, kube: Kube, settings: state.AppSettings) -> None:
        self.store = store
        self.kube = kube
        self.settings = settings
        # Providers are queried from the cluster's network, through a gateway pod.
        self.rollouts = RolloutController(self, transport=GatewayTransport(self.fetch))
        self.autoscaler = Autoscaler(self, self.autoscaled)
        self._woken = False
        self._applied: dict[str, str] = {}
        self._table_digest = ""
        self._table_pushed = 0.0
        self._shifted: set[str] = set()  # promoting services whose traffic is all on the canary
        self.last_plan = Plan()

    def _promoting(self, service: str) -> bool:
        rollout = self.rollouts.active(service)
        return rollout is not None and rollout.promoting

    # -- RolloutHost ----------------------------------------------------------------------
    def pods(self, service: str | None = None) -> list[Obj]:
        selector = {naming.APP: self.settings.app, naming.MANAGED_BY: naming.OWNER}
        if service is not None:
            selector[naming.SERVICE] = service
        return self.kube.list("v1", "Pod", self.settings.namespace, selector)

    def members(self, service: str) -> list[Member]:
        out = []
        for pod in self.pods(service):
            labels = pod["metadata"].get("labels") or {}
            if labels.get(naming.COMPONENT) != "service":
                continue
            # A terminating pod is not "stopping" in mso's sense (drained, out of the
            # table): the gateway reaches a subset through its Service's ClusterIP, and
            # kube-proxy may route to the pod until its rules catch up. So it counts, as
            # not ready, and a subset is settled only once its old pods are gone.
            terminating = pod["metadata"].get("deletionTimestamp") is not None
            out.append(Member(labels.get(naming.SUBSET, "stable"),
                              int(labels.get(naming.RELEASE, "0")),
                              pod_ready(pod) and not terminating, False))
        return out

    async def metrics(self) -> dict[str, Any]:
        """Every ready gateway pod's SNAPSHOT in one (each pod serves part of the traffic),
        endpoints tagged with the pod's name: the analysis diffs each pod's counters on
        their own, so a pod whose proxy restarted resets only its own. A pod that does not
        answer fails the whole read: its endpoints missing from one snapshot would count
        its whole history again in the next."""
        controls = self.controls()
        if not controls:
            raise ControlError("the gateway has no ready pod")
        snaps = await asyncio.gather(*(asyncio.to_thread(c.metrics) for _, c in controls))
        return tag_snapshots({name: snap for (name, _), snap in zip(controls, snaps)})

    def relabel(self, service: str, mapping: dict[str, str]) -> None:
        # Subset labels are part of immutable Deployment selectors; blue/green swaps
        # weights instead (the gateway decides who is "stable").
        log.info("relabel %s %s: served by weights on Kubernetes", service, mapping)

    def wake(self) -> None:
        self._woken = True

    # -- AutoscaleHost --------------------------------------------------------------------
    def autoscaled(self) -> dict[str, dict[str, Any]]:
        """service -> `autoscale` of the last deploy (read each time: a deploy from the
        CLI may change it while the controller runs)."""
        settings = state.load_settings(self.store)
        return dict(settings.autoscale) if settings is not None else {}

    def serving(self, service: str) -> int:
        return sum(1 for m in self.members(service) if m.ready)

    def cpu_seconds(self, service: str) -> dict[str, float] | None:
        return None  # pods' CPU is not read (support.py refuses the CPU target here)

    def set_replicas(self, service: str, replicas: int) -> None:
        """The store's desired count is what every reconcile applies to the Deployment
        (`spec.replicas`), so the autoscaler and the next apply never disagree."""
        want = self.store.desired()[service]
        self.store.set_desired(Desired(service, "service", want.release, replicas,
                                       want.manifest_replicas))
        self.wake()

    # -- gateway --------------------------------------------------------------------------
    def gateway_pods(self) -> list[Obj]:
        """The ready gateway pods that are not terminating, by name."""
        pods = self.kube.list("v1", "Pod", self.settings.namespace,
                              naming.gateway_selector(self.settings.app))
        return sorted((p for p in pods if pod_ready(p)
                       and not p["metadata"].get("deletionTimestamp")),
                      key=lambda p: str(p["metadata"]["name"]))

    def gateway_pod(self) -> Obj | None:
        pods = self.gateway_pods()
        return pods[0] if pods else None

    def controls(self) -> list[tuple[str, GatewayControl]]:
        """(pod name, control relay client) of each ready gateway pod."""
        token = state.control_token(self.store)
        out = []
        for pod in self.gateway_pods():
            status = pod.get("status") or {}
            ip = status.get("podIP") or status.get("pod_ip")
            if ip:
                out.append((str(pod["metadata"]["name"]),
                            GatewayControl(ip, naming.GATEWAY_CONTROL_PORT, token)))
        return out

    async def fetch(self, message: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One provider request made by a ready gateway pod (`mso.proxy.fetch`): the
        first that answers (each is in the cluster's network)."""
        problem: ControlError = ControlError("the gateway has no ready pod")
        for _, control in self.controls():
            control.timeout = timeout
            try:
                return await asyncio.to_thread(control.request, {"op": "fetch", **message})
            except ControlError as exc:
                problem = exc
        raise problem

    def subset_hosts(self) -> dict[str, str]:
        services = self.kube.list("v1", "Service", self.settings.namespace,
                                  {naming.APP: self.settings.app})
        out = {}
        for svc in services:
            ip = (svc.get("spec") or {}).get("clusterIP")
            if ip and ip != "None":
                out[svc["metadata"]["name"]] = ip
        return out

    def gateway_spec(self) -> gateway.GatewaySpec:
        services: dict[str, dict[str, tuple[str, int]]] = {}
        models: dict[str, dict[str, Any]] = {}
        for name, want in self.store.desired().items():
            rel = self.store.release(name, want.release)
            if want.kind == "service" and rel is not None:
                ports = port_map(rel.spec["model"])
                if ports:
                    services[name] = ports
                    models[name] = rel.spec["model"]
        s = self.settings
        return gateway.GatewaySpec(s.app, s.namespace, s.gateway_port, tuple(s.route_views()),
                                   services, s.runtime_image, gateway.preview_ports(models),
                                   s.max_connections_per_client, gateway.pod_tls(s.tls),
                                   gateway.tls_files(s.tls))

    def push_table(self, weights: dict[str, dict[str, int]], force: bool = False,
                   previews: set[str] | None = None) -> bool:
        hosts = self.subset_hosts()
        built = gateway.table(self.gateway_spec(), hosts, weights, previews)
        fetch = self.rollouts.provider_urls()
        if fetch:  # what the gateway may request for the analysis (mso.proxy.fetch)
            built["fetch"] = fetch
            built["hosts"] = gateway.provider_hosts(fetch, hosts, self.settings.namespace)
        digest = hashlib.sha256(json.dumps(built, sort_keys=True).encode()).hexdigest()
        now = time.monotonic()
        if not force and digest == self._table_digest and now - self._table_pushed < 5.0:
            return True
        controls = self.controls()
        if not controls:
            return False
        versioned = dict(built, version=int(time.time() * 10) % 2**31)
        pushed = True
        for _, control in controls:  # every gateway pod serves part of the traffic
            try:
                control.set_table(versioned)
            except ControlError as exc:
                log.warning("%s", exc)
                pushed = False
        if pushed:
            self._table_digest, self._table_pushed = digest, now
        return pushed

    # -- workloads ------------------------------------------------------------------------
    def workload(self, service: str, release: int, subset: str, replicas: int) -> Workload:
        rel = self.store.release(service, release)
        if rel is None:
            raise KeyError(f"{service} release {release}")
        models = {n: r.spec["model"] for n in self.store.desired()
                  if (r := self.store.latest_release(n)) is not None and r.spec["kind"] == "service"}
        image = state.image_of(self.store, service, release) or ""
        own = naming.is_app_image(image, self.settings.app)
        return Workload(
            app=self.settings.app, service=service, kind=rel.spec["kind"], release=release,
            spec_hash=rel.spec_hash, spec=rel.spec,
            secrets=self.store.release_secrets(service, release), image=image,
            pull_policy="Never" if naming.is_mso_image(image) else "IfNotPresent",
            replicas=replicas, subset=subset,
            workdir=container_workdir(rel.spec, Path(self.settings.base_dir), own),
            dependencies=dependencies(rel.spec["model"], models),
            bridge_image=self.settings.runtime_image)

    def service_objects(self, w: Workload) -> list[Obj]:
        api = api_versions(self.settings.version)
        ns = self.settings.namespace
        objs = [o for o in (render.config_map(w, ns), render.secret(w, ns)) if o is not None]
        objs += [render.subset_service(w, ns, w.subset), render.deployment(w, ns)]
        if w.subset == "stable":
            objs.append(render.disruption_budget(w, ns, api))
        return objs

    def _observe(self) -> tuple[dict[tuple[str, str], int], dict[str, list[tuple[int, bool]]]]:
        """Ready pods per (service, subset), and (release, ready) of each stable pod."""
        ready: dict[tuple[str, str], int] = {}
        stable: dict[str, list[tuple[int, bool]]] = {}
        for pod in self.pods():
            labels = pod["metadata"].get("labels") or {}
            if labels.get(naming.COMPONENT) != "service":
                continue
            key = (labels.get(naming.SERVICE, ""), labels.get(naming.SUBSET, ""))
            live = pod_ready(pod) and not pod["metadata"].get("deletionTimestamp")
            if live:
                ready[key] = ready.get(key, 0) + 1
            if key[1] == "stable":  # terminating pods too: kube-proxy may still route to them
                stable.setdefault(key[0], []).append((int(labels.get(naming.RELEASE, "0")), live))
        return ready, stable

    def plan(self) -> Plan:
        out = Plan()
        deployments = self.kube.list("apps/v1", "Deployment", self.settings.namespace,
                                     {naming.APP: self.settings.app})
        ready, stable = self._observe()
        held = state.holding(self.store)
        for name, want in self.store.desired().items():
            if want.kind != "service":
                continue
            if name in held:  # its first start waits for its dependencies (deploy.py)
                out.targets[name] = []
                out.weights[name] = {"stable": 100}
                continue
            targets, weights = self.rollouts.targets(name, want)
            targets, weights = self._promotion(name, want.replicas, targets, weights, ready,
                                               _subset_release(deployments, name, "stable"))
            rollout = self.rollouts.active(name)
            stable_pods = tuple(stable.get(name, []))
            others = {subset: (_subset_release(deployments, name, subset),
                               ready.get((name, subset), 0))
                      for subset in ("canary", bluegreen.PREVIEW)}
            blue_green = handoff.serving_elsewhere(rollout, targets, others, stable_pods) \
                or bluegreen.plan(rollout, want.replicas)
            if blue_green is not None:
                targets, weights = blue_green.targets, blue_green.weights
                if blue_green.preview_listener:
                    out.previews.add(name)
                if blue_green.handoff:
                    out.handoffs.add(name)
            out.targets[name] = targets
            for t in targets:
                out.apply += self.service_objects(self.workload(name, t.release, t.subset, t.replicas))
            subsets = {t.subset for t in targets}
            out.weights[name] = effective_weights(
                weights, {s: ready.get((name, s), 0) for s in weights})
            for d in deployments:
                labels = d["metadata"].get("labels") or {}
                if labels.get(naming.SERVICE) == name and labels.get(naming.SUBSET) not in subsets:
                    out.stale.append(d)
        return out

    def _promotion(self, name: str, replicas: int, targets: list[SubsetTarget],
                   weights: dict[str, int], ready: dict[tuple[str, str], int],
                   stable_now: int | None) -> tuple[list[SubsetTarget], dict[str, int]]:
        """While promoting a canary: scale it to full size, move all traffic to it, and
        only then update the stable Deployment, so the stable update costs no request.

        A stable Deployment already on the new release means the traffic was moved before
        (e.g. by a controller that since restarted): never move it back to the old one.
        """
        rollout = self.rollouts.active(name)
        if rollout is None or rollout.strategy != "canary" or not rollout.promoting:
            self._shifted.discard(name)
            return targets, weights
        if stable_now == rollout.to_release:
            self._shifted.add(name)
        canary_ready = ready.get((name, "canary"), 0) >= replicas
        stable_release = rollout.to_release if name in self._shifted else rollout.from_release
        out = [SubsetTarget("stable", stable_release, replicas),
               SubsetTarget("canary", rollout.to_release, replicas)]
        if canary_ready:
            return out, {"stable": 0, "canary": 100}
        return out, weights

    def apply(self, obj: Obj) -> None:
        key = f"{obj['kind']}/{obj['metadata']['name']}"
        digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        if self._applied.get(key) != digest:
            self.kube.apply(obj, self.settings.app)
            self._applied[key] = digest

    def reconcile(self, consistent: Callable[[], bool] | None = None) -> Plan:
        """Plan and apply. `consistent` (the controller's) is asked after planning: False
        means a command began recording a deploy meanwhile, and nothing is applied."""
        plan = self.plan()
        if consistent is not None and not consistent():
            return self.last_plan
        for obj in plan.apply:
            self.apply(obj)
        pushed = self.push_table(plan.weights, previews=plan.previews)
        if pushed:
            self._shifted.update(n for n, w in plan.weights.items()
                                 if w.get("canary") == 100 and self._promoting(n))
        if pushed:
            for d in plan.stale:
                self.kube.delete({"apiVersion": "apps/v1", "kind": "Deployment",
                                  "metadata": d["metadata"]}, self.settings.app)
                self._applied.pop(f"Deployment/{d['metadata']['name']}", None)
        self.last_plan = plan
        return plan

    async def tick(self, consistent: Callable[[], bool] | None = None) -> None:
        await self.rollouts.tick()
        await self.autoscaler.tick()
        await asyncio.to_thread(self.reconcile, consistent)


def _subset_release(deployments: list[Obj], service: str, subset: str) -> int | None:
    """The release a subset's Deployment runs (its label), None if there is none."""
    for d in deployments:
        labels = d["metadata"].get("labels") or {}
        if labels.get(naming.SERVICE) == service and labels.get(naming.SUBSET) == subset:
            return int(labels.get(naming.RELEASE, "0"))
    return None
