"""`mso ps` and `mso endpoints` on Swarm, in the local engine's JSON shapes.

ps reads tasks from the Docker API (a task is a replica); endpoints reads the last route
table the controller pushed to the gateway, so weights are what the gateway really uses.
"""

from __future__ import annotations

import time
from typing import Any

from mso.engines.images import supervision
from mso.engines.swarm import names, state
from mso.engines.swarm.diagnose import (STATES, allowance, epoch, is_current, job_problem,
                                       rolled_back, slot_view)
from mso.engines.swarm.observe import TaskObs, not_ready, parse
from mso.engines.swarm.swarmapi import SwarmApi
from mso.spec.models import Manifest
from mso.store.db import Store


def ps_view(api: SwarmApi, app: str, now: float | None = None) -> dict[str, Any]:
    """One row per replica (task slot): its current task, or the failed task a
    `restart: never` service left; `problem` says what is wrong (diagnose.py)."""
    replicas, _ = replica_rows(api, app, time.time() if now is None else now)
    return {"app": app, "engine": "swarm", "replicas": replicas}


def replica_rows(api: SwarmApi, app: str, now: float) -> tuple[list[dict[str, Any]],
                                                                 dict[str, float]]:
    """ps rows, and for each running task without a healthcheck (Swarm runs nothing that
    says it works), how long it has been running: task ID -> seconds."""
    unprobed: dict[str, float] = {}
    services = api.services(app)
    tasks = api.tasks([s["ID"] for s in services])
    network = api.network_id(_network(api, app)) or ""
    observed = {obs.id: obs for obs in parse(services, tasks, network)}
    by_id = {t.id: t for obs in observed.values() for t in obs.tasks}
    raw_by_service: dict[str, list[dict[str, Any]]] = {}
    for raw in tasks:
        raw_by_service.setdefault(str(raw.get("ServiceID")), []).append(raw)
    replicas: list[dict[str, Any]] = []
    for svc in services:
        obs = observed.get(svc["ID"])
        if obs is None or obs.role in ("gateway", "job"):
            continue
        restart = str((((svc.get("Spec") or {}).get("TaskTemplate") or {})
                       .get("RestartPolicy") or {}).get("Condition", "any"))
        slots: dict[Any, list[dict[str, Any]]] = {}
        for raw in raw_by_service.get(svc["ID"], []):
            slots.setdefault(raw.get("Slot") or raw["ID"], []).append(raw)
        for slot, history in slots.items():
            if isinstance(slot, int) and slot > obs.replicas:
                continue  # scaled down
            for raw in history:  # every one of them: a slot may briefly have two
                if is_current(raw) and (raw.get("Status") or {}).get("State") == "running" \
                        and not _healthcheck(raw):
                    since = epoch((raw.get("Status") or {}).get("Timestamp"))
                    unprobed[str(raw["ID"])] = now - since if since is not None else 0.0
            health = _health(api, history, now)
            view = slot_view(history, restart, now, health)
            if view is None:
                continue
            for raw in _shown(history, view.task):
                task = by_id[str(raw["ID"])]
                own = raw is view.task
                shown, reason = (view.state, view.reason) if own else (replica_state(task),
                                                                       task.error)
                if shown == "READY" and task.shim_status:  # ready once; and now?
                    health = api.container_health(task.container)
                    if not_ready(health):
                        shown, reason = "RUNNING", _last_output(health)
                replicas.append({
                    "service": obs.service,
                    "replica": names.replica_name(obs.service, obs.role, task.slot, task.id),
                    "release": task.release,
                    "subset": obs.subset,  # labels follow a blue/green swap
                    "state": shown, "pid": None,
                    "address": task.address, "restarts": view.restarts,
                    "reason": reason,
                    "problem": view.problem.to_json() if own and view.problem else None,
                    "node": task.node, "task": task.id, "container": task.container})
    replicas.sort(key=lambda r: (r["service"], r["subset"], r["replica"]))
    return replicas, unprobed


def _last_output(health: dict[str, Any] | None) -> str:
    log = (health or {}).get("Log") or []
    return str(log[-1].get("Output", "")).strip() if log else ""


def _healthcheck(task: dict[str, Any]) -> dict[str, Any] | None:
    check = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Healthcheck")
    return dict(check) if check else None


def job_rows(api: SwarmApi, app: str, releases: dict[str, int],
             runs: dict[str, int]) -> list[dict[str, Any]]:
    """Rows (ps fields) of the jobs in `releases` (job -> release) whose current run
    (`runs`: job -> run number, 0 if absent) failed, with `tasks`: the IDs of every
    attempt (each has a name of its own). A failed earlier run, which the controller is
    about to replace, is not one."""
    services = [s for s in api.services(app)
                if (s["Spec"].get("Labels") or {}).get(names.LABEL_ROLE) == "job"]
    out = []
    for svc in services:
        labels = svc["Spec"].get("Labels") or {}
        job = str(labels.get(names.LABEL_SERVICE, ""))
        if job not in releases or str(releases[job]) != labels.get(names.LABEL_RELEASE) \
                or labels.get(names.LABEL_RUN, "0") != str(runs.get(job, 0)):
            continue
        history = api.tasks([svc["ID"]])
        policy = ((svc["Spec"].get("TaskTemplate") or {}).get("RestartPolicy") or {})
        problem = job_problem(history, int(policy.get("MaxAttempts") or 0))
        if problem is None:
            continue
        newest = max(history, key=lambda t: epoch(t.get("CreatedAt")) or 0.0)
        out.append({"service": job, "replica": names.replica_name(job, "job", newest.get("Slot"),
                                                                  str(newest["ID"])),
                    "release": releases[job], "state": "FAILED", "reason": problem.message,
                    "problem": problem.to_json(), "tasks": [str(t["ID"]) for t in history]})
    return out


def rollback_rows(api: SwarmApi, app: str, wanted: dict[str, int]) -> list[dict[str, Any]]:
    """Rows (ps fields) of the wanted releases whose update Swarm rolled back after a task
    failed, with `tasks`: the slot's task IDs."""
    out = []
    for svc in api.services(app):
        labels = svc["Spec"].get("Labels") or {}
        service, role = str(labels.get(names.LABEL_SERVICE, "")), labels.get(names.LABEL_ROLE)
        if role not in ("main", "second") or service not in wanted:
            continue
        history = api.tasks([svc["ID"]])
        found = rolled_back(svc, history, wanted[service])
        if found is None:
            continue
        task, problem = found
        slot = [str(t["ID"]) for t in history if t.get("Slot") == task.get("Slot")]
        out.append({"service": service,
                    "replica": names.replica_name(service, role, task.get("Slot"),
                                                  str(task["ID"])),
                    "release": wanted[service], "state": "FAILED", "reason": problem.message,
                    "problem": problem.to_json(), "tasks": slot})
    return out


def replica_state(task: TaskObs) -> str:
    if task.stopping and task.state in ("running", "starting"):
        return "STOPPING"
    return STATES.get(task.state, "STARTING")


def _shown(history: list[dict[str, Any]], current: dict[str, Any]) -> list[dict[str, Any]]:
    """The slot's row task, and a task it replaces that still runs (an update in flight:
    the old task is shown STOPPING beside the new one)."""
    stopping = [t for t in history if t is not current and not is_current(t)
                and str((t.get("Status") or {}).get("State")) in ("running", "starting")]
    return [current, *stopping]


def _health(api: SwarmApi, history: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
    """Docker's health record of the slot's starting container, read only when it could
    matter (a healthcheck, started READY_ALLOWANCE ago); None when unknown."""
    current = next((t for t in history if is_current(t)), None)
    if current is None or (current.get("Status") or {}).get("State") != "starting":
        return None
    check = _healthcheck(current)
    since = epoch((current.get("Status") or {}).get("Timestamp"))
    container = ((current.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
    if not check or since is None or not container:
        return None
    # The shim's status says at once what it knows (a crash loop inside the container).
    if now - since < allowance(check) and \
            [str(p) for p in check.get("Test") or []][1:] != supervision.STATUS_CHECK:
        return None
    return api.container_health(str(container))


def _network(api: SwarmApi, app: str) -> str:
    found = api.api.networks(filters=names.app_filter(app)) or []
    return str(found[0]["Name"]) if found else names.network_name(app, None)


def endpoints_view(store: Store, manifest: Manifest) -> dict[str, Any]:
    table: dict[str, Any] = state.get_json(store, state.TABLE_KEY, {})
    services: dict[str, Any] = {}
    metrics = None
    clusters = table.get("clusters") or {}
    for listener in table.get("listeners") or []:
        if listener["name"] == "metrics":
            metrics = f"http://{names.GATEWAY}:{listener['port']}/metrics"
        cluster = listener.get("cluster")
        if listener["name"] == "gateway" or cluster not in clusters:
            continue
        service = clusters[cluster]["service"]
        address = f"{names.GATEWAY}:{listener['port']}"
        entry = services.setdefault(service, {"address": address, "ports": {},
                                              "endpoints": []})
        entry["ports"][cluster.split("/", 1)[1]] = {"address": address,
                                                    "protocol": listener["mode"]}
        for subset, body in (clusters[cluster].get("subsets") or {}).items():
            for ep in body.get("endpoints") or []:
                if any(e["replica"] == ep["id"] for e in entry["endpoints"]):
                    continue
                entry["endpoints"].append({"replica": ep["id"], "address": ep["address"],
                                           "subset": subset, "weight": body.get("weight", 0),
                                           "ready": True})
    tls = manifest.gateway.tls
    return {"gateway": f"127.0.0.1:{manifest.gateway.port}",
            **({"gateway_tls": f"127.0.0.1:{tls.port}"} if tls is not None else {}),
            "metrics": metrics,
            "routes": [r.model_dump(mode="json") for r in manifest.routes],
            **({"max_connections_per_client": manifest.gateway.max_connections_per_client}
               if manifest.gateway.max_connections_per_client else {}),
            "services": services}
