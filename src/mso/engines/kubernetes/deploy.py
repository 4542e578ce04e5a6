"""`mso deploy` on Kubernetes: releases, images, then the app in dependency waves.

Order: record releases (the same `apply_manifest` as the local engine); build images;
apply the namespace, the gateway and every Service (so pods get the service variables
their `<DEP>_URL` values refer to); start rollouts for changed services; then, wave by
wave in dependency order, run jobs to completion and bring services to readiness. A
service starting for the first time is held back (`state.holding`: no Deployment is
applied for it, by this command or the background controller) until its wave: so
`depends_on` and a job's `before:` order the first start as on the local engine. A job
whose earlier run of the same release failed is run again.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mso.controllers.routing import RouteLimits
from mso.releases.apply import apply_manifest
from mso.engines import images
from mso.releases.images import record_builds
from mso.controllers.routing import tls_config
from mso.engines.kubernetes import document, failures, gateway, naming, render, state, views
from mso.engines.kubernetes.host import KubeHost, Plan, pod_ready
from mso.engines.kubernetes.kube import Kube, KubeError
from mso.engines.kubernetes.render import Obj
from mso.engines.kubernetes.versions import api_versions
from mso.engines.problems import READY_ALLOWANCE, REPORT_LOG_LINES, Problem
from mso.engines.remote import UP_AFTER, DeployFailed
from mso.spec.load import LoadedManifest
from mso.spec.models import Manifest
from mso.store.hold import hold

BUILT_KEY = "k8s.built"  # service -> the image the last deploy built for it

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(f"mso: {message}", file=sys.stderr, flush=True)


def waves(manifest: Manifest) -> list[list[str]]:
    """Services and jobs grouped so each group depends only on earlier groups (pure)."""
    needs: dict[str, set[str]] = {n: set(manifest.runnable(n).depends_on)
                                  for n in [*manifest.services, *manifest.jobs]}
    for job, spec in manifest.jobs.items():
        for target in spec.before:
            needs[target].add(job)
    level: dict[str, int] = {}

    def depth(name: str) -> int:
        if name not in level:
            level[name] = 0  # the manifest is validated acyclic
            level[name] = 1 + max((depth(d) for d in needs[name] if d in needs), default=-1)
        return level[name]

    for name in needs:
        depth(name)
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for name in needs:
        out[level[name]].append(name)
    return [sorted(w) for w in out]


def held_back(host: KubeHost, order: list[list[str]]) -> set[str]:
    """The services of `order`'s later waves that have no Deployment yet: their first
    start waits for their wave (as on the local engine, an update of a service that runs
    does not wait)."""
    deployed = {(d["metadata"].get("labels") or {}).get(naming.SERVICE)
                for d in host.kube.list("apps/v1", "Deployment", host.settings.namespace,
                                        {naming.APP: host.settings.app})}
    services = {n for n, w in host.store.desired().items() if w.kind == "service"}
    return {n for wave in order[1:] for n in wave if n in services and n not in deployed}


def build_images(loaded: LoadedManifest, progress: Progress) -> tuple[str, dict[str, str]]:
    """The runtime image and the image of each service and job."""
    m = loaded.manifest
    progress("preparing images")
    # The gateway image (mso's proxy on the offline base) also runs gatewayd and the
    # bridge sidecar.
    runtime = images.ensure_gateway_image()
    chosen = {name: images.build_service_image(loaded, name) for name in [*m.services, *m.jobs]}
    return runtime, chosen


def settings_for(loaded: LoadedManifest, options: Any, runtime: str, server: str) -> state.AppSettings:
    m = loaded.manifest
    return state.AppSettings(
        app=m.app, namespace=document.namespace_of(loaded, options.namespace),
        kubeconfig=options.kubeconfig, context=options.context, gateway_port=m.gateway.port,
        routes=[{"path": r.path, "host": r.host, "service": r.service, "port": r.port,
                 **({"limits": asdict(r.limits)} if r.limits != RouteLimits() else {})}
                for r in document.routes(loaded)],
        max_connections_per_client=m.gateway.max_connections_per_client or 0,
        base_dir=str(loaded.base_dir), runtime_image=runtime, version=options.version or server,
        autoscale={n: s.autoscale.model_dump(mode="json") for n, s in m.services.items()
                   if s.autoscale is not None},
        tls=tls_config(loaded))


def apply_infrastructure(host: KubeHost, loaded: LoadedManifest) -> None:
    s = host.settings
    ns = host.kube.get("v1", "Namespace", s.namespace, None)
    deadline = time.monotonic() + 120
    while ns is not None and (ns.get("status") or {}).get("phase") == "Terminating":
        if time.monotonic() > deadline:  # e.g. right after `mso down`
            raise KubeError(f"namespace {s.namespace} is still being deleted")
        time.sleep(0.5)
        ns = host.kube.get("v1", "Namespace", s.namespace, None)
    if ns is None or naming.is_owned(ns["metadata"].get("labels"), s.app):
        host.kube.apply(render.namespace_object(s.namespace, s.app), s.app)
    host.kube.apply(gateway.control_secret(s.namespace, s.app, state.control_token(host.store)), s.app)
    spec = host.gateway_spec()
    for name, want in host.store.desired().items():
        if want.kind == "service" and name in spec.services:
            w = host.workload(name, want.release, "stable", want.replicas)
            for subset in ("stable", "canary"):
                host.apply(render.subset_service(w, s.namespace, subset))
            host.apply(gateway.stable_address_service(spec, name))
    for obj in gateway.gateway_objects(spec, document.gateway_table_json(spec)):
        host.apply(obj)


def begin_rollouts(host: KubeHost, before: dict[str, Any]) -> None:
    for name, want in host.store.desired().items():
        old = before.get(name)
        if want.kind != "service" or old is None or old.release == want.release:
            continue
        if host.kube.get("apps/v1", "Deployment", name, host.settings.namespace) is not None:
            host.rollouts.begin(name, old.release, want.release)


def run_job(host: KubeHost, name: str, timeout: float, progress: Progress) -> None:
    want = host.store.desired()[name]
    w = host.workload(name, want.release, "stable", 1)
    objs = render.workload_objects(w, host.settings.namespace, api_versions(host.settings.version))
    job_name = objs[-1]["metadata"]["name"]
    ns = host.settings.namespace
    existing = host.kube.get("batch/v1", "Job", job_name, ns)
    if existing is not None and _job_failed(existing):
        # A failed run of this release (an earlier deploy): run it again, as the local
        # engine does, instead of failing every later deploy with the old failure.
        remove_job(host, existing, timeout=60.0)
        existing = None
    if existing is None:
        for obj in objs:
            host.apply(obj)
        progress(f"job {name}: running")
    deadline = time.monotonic() + timeout + 60
    while time.monotonic() < deadline:
        job = host.kube.get("batch/v1", "Job", job_name, ns) or {}
        status = job.get("status") or {}
        if status.get("succeeded"):
            progress(f"job {name}: completed")
            return
        uid = job.get("metadata", {}).get("uid")
        pods = [p for p in host.kube.list("v1", "Pod", ns, {naming.APP: host.settings.app,
                                                          naming.SERVICE: name})
                if (p["metadata"].get("labels") or {}).get(naming.RELEASE) == str(want.release)
                and (p["metadata"].get("labels") or {}).get(naming.COMPONENT) == "job"
                and any(o.get("uid") == uid for o in p["metadata"].get("ownerReferences") or [])]
        found = failures.problems(host.kube, ns, pods, time.time())
        if any(c.get("type") == "Failed" and c.get("reason") == "DeadlineExceeded"
               for c in status.get("conditions") or []):
            # Kubernetes' activeDeadlineSeconds is `jobs.*.timeout`: say it as the other
            # engines do, with the pods' last lines.
            why = Problem("failed", f"timed out after {timeout:g}s (jobs.{name}.timeout)")
            found = {p["metadata"]["name"]: why for p in pods[-1:]} or found
            if not found:
                raise KubeError(f"job {name} timed out after {timeout:g}s "
                                f"(jobs.{name}.timeout)")
        if status.get("failed") or found:
            if status.get("failed") and not found:
                reason = next((c.get("message") or c.get("reason") for c in
                               status.get("conditions") or [] if c.get("type") == "Failed"),
                              None) or "the job failed"
                found = {p["metadata"]["name"]: Problem("failed", reason) for p in pods[-1:]}
            if found:
                raise DeployFailed(failures.failing(host.kube, ns, pods, found,
                                                    REPORT_LOG_LINES))
            raise KubeError(f"job {name} failed (see `kubectl logs job/{job_name} -n {ns}`)")
        time.sleep(0.5)
    raise KubeError(f"job {name} timed out after {timeout:g}s (jobs.{name}.timeout)")


def _job_failed(job: Obj) -> bool:
    status = job.get("status") or {}
    return bool(status.get("failed")) or any(
        c.get("type") == "Failed" and c.get("status") == "True"
        for c in status.get("conditions") or [])


def remove_job(host: KubeHost, job: Obj, timeout: float) -> None:
    """Delete a Job (its pods in the background) and wait until its name is free."""
    md = job["metadata"]
    host.kube.delete({"apiVersion": "batch/v1", "kind": "Job", "metadata": md},
                     host.settings.app)
    deadline = time.monotonic() + timeout
    while host.kube.get("batch/v1", "Job", md["name"], host.settings.namespace) is not None:
        if time.monotonic() > deadline:
            raise KubeError(f"job {md['name']} was not deleted within {timeout:g}s")
        time.sleep(0.2)


def _targeted(pods: list[Obj], name: str, plan: Plan) -> list[Obj]:
    """The live pods of `name` that run one of the plan's targets (subset and release)."""
    wanted = {(t.subset, str(t.release)) for t in plan.targets.get(name, [])}
    return [p for p in pods
            if (p["metadata"].get("labels") or {}).get(naming.SERVICE) == name
            and (p["metadata"]["labels"].get(naming.SUBSET),
                 p["metadata"]["labels"].get(naming.RELEASE)) in wanted
            and not p["metadata"].get("deletionTimestamp")]


def counts_as_up(pod: Obj, now: float) -> bool:
    """Ready, and, without a readiness probe (ready then means only that the container
    runs), running for UP_AFTER seconds."""
    if not pod_ready(pod):
        return False
    app = views.app_status(pod)
    if views.app_spec(pod).get("readinessProbe"):
        return True
    since = views.epoch(((app.get("state") or {}).get("running") or {}).get("startedAt"))
    return since is not None and now - since >= UP_AFTER


def services_ready(host: KubeHost, names: list[str], plan: Plan,
                   pods: list[Obj] | None = None,
                   now: float | None = None) -> dict[str, tuple[int, int]]:
    """service -> (ready pods of the wanted releases, wanted pods), per `plan`'s targets."""
    out = {}
    pods = host.pods() if pods is None else pods
    now = time.time() if now is None else now
    for name in names:
        wanted = sum(t.replicas for t in plan.targets.get(name, []))
        ready = sum(1 for p in _targeted(pods, name, plan) if counts_as_up(p, now))
        out[name] = (min(ready, wanted), wanted)
    return out


def wait_services(host: KubeHost, names: list[str], timeout: float, progress: Progress) -> None:
    """Until every pod the plan wants is up; a problem of one of them ends the wait
    (DeployFailed) while the cluster and the controller go on as they would have."""
    deadline = time.monotonic() + timeout
    judge_readiness = time.time() + READY_ALLOWANCE
    last = ""
    while True:
        plan = host.reconcile()
        pods, now = host.pods(), time.time()
        targeted = [p for n in names for p in _targeted(pods, n, plan)]
        found = failures.problems(host.kube, host.settings.namespace, targeted, now)
        if now < judge_readiness:
            # The services they depend on were only just waited for: each gets its own
            # READY_ALLOWANCE from here before a failing readiness probe counts.
            found = {k: p for k, p in found.items() if p.kind != "not_ready"}
        if found:
            raise DeployFailed(failures.failing(host.kube, host.settings.namespace, targeted,
                                                found, REPORT_LOG_LINES))
        counts = services_ready(host, names, plan, pods, now)
        line = ", ".join(f"{n} {r}/{w}" for n, (r, w) in sorted(counts.items()))
        if line != last:
            progress(f"ready: {line}")
            last = line
        if all(r >= w for r, w in counts.values()):
            return
        if time.monotonic() > deadline:
            raise KubeError(f"not ready within {timeout:g}s: {line}")
        time.sleep(0.5)


def wait_gateway(host: KubeHost, timeout: float, progress: Progress) -> None:
    """Every stable address is the gateway: nothing can reach a dependency before it."""
    deadline = time.monotonic() + timeout
    while host.gateway_pod() is None:
        if time.monotonic() > deadline:
            raise KubeError(f"the mso gateway was not ready within {timeout:g}s")
        time.sleep(0.5)
    progress("gateway ready")


def deploy(loaded: LoadedManifest, kube: Kube, options: Any, wait: bool,
           progress: Progress = stderr_progress, timeout: float = 300.0,
           force: bool = False) -> dict[str, Any]:
    runtime, chosen = build_images(loaded, progress)
    store = state.open_store(loaded.base_dir)
    settings = settings_for(loaded, options, runtime, kube.server_version())
    state.save_settings(store, settings)
    host = KubeHost(store, kube, settings)
    with hold(store):  # a running controller must not see the releases before their rollouts
        before = store.desired()
        # New code with an unchanged manifest is a new release too (mso.releases.images).
        changes = record_builds(
            store, apply_manifest(store, loaded, force=force), chosen,
            image_of=lambda service, release: state.image_of(store, service, release),
            record=lambda service, release: state.set_image(store, service, release,
                                                            chosen[service]),
            built_key=BUILT_KEY)
        begin_rollouts(host, before)
        m = loaded.manifest
        order = waves(m)
        state.set_holding(store, held_back(host, order))
    apply_infrastructure(host, loaded)
    wait_gateway(host, timeout, progress)
    for wave in order:
        held = state.holding(store)
        if held & set(wave):
            state.set_holding(store, held - set(wave))
        for name in wave:
            if name in m.jobs:
                run_job(host, name, float(m.jobs[name].timeout), progress)
        services = [n for n in wave if n in m.services]
        # A later wave's first start waits for this one even when the deploy itself
        # would not wait (depends_on and `before:` mean the same as on the local engine).
        if services and (wait or state.holding(store)):
            wait_services(host, services, timeout, progress)
    settling = host.reconcile().handoffs  # blue/green hand-offs need the controller too
    return {"app": m.app, "namespace": settings.namespace,
            "changes": [{"service": c.service, "release": c.release, "created": c.created,
                         "change": c.change} for c in changes],
            "rollouts": [n for n in store.desired()
                         if host.rollouts.active(n) is not None or n in settling]}


def base_dir_of(loaded: LoadedManifest) -> Path:
    return loaded.base_dir
