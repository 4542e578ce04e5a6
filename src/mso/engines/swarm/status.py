"""`mso ps` and `mso endpoints` on Swarm, in the local engine's JSON shapes.

ps reads tasks from the Docker API (a task is a replica); endpoints reads the last route
table the controller pushed to the gateway, so weights are what the gateway really uses.
"""

from __future__ import annotations

from typing import Any

from mso.engines.swarm import names, state
from mso.engines.swarm.observe import TaskObs, parse
from mso.engines.swarm.swarmapi import SwarmApi
from mso.spec.models import Manifest
from mso.store.db import Store

_STATES = {"running": "READY", "starting": "STARTING", "failed": "FAILED",
           "rejected": "FAILED", "shutdown": "STOPPED", "complete": "STOPPED",
           "orphaned": "FAILED", "remove": "STOPPING"}


def replica_state(task: TaskObs) -> str:
    if task.stopping and task.state in ("running", "starting"):
        return "STOPPING"
    return _STATES.get(task.state, "STARTING")


def ps_view(api: SwarmApi, app: str) -> dict[str, Any]:
    services = api.services(app)
    tasks = api.tasks([s["ID"] for s in services])
    network = api.network_id(_network(api, app)) or ""
    replicas: list[dict[str, Any]] = []
    for obs in parse(services, tasks, network):
        if obs.role == "gateway":
            continue
        for task in obs.tasks:
            if task.desired != "running" and task.state not in ("running", "starting"):
                continue
            failed = sum(1 for t in obs.tasks if t.slot == task.slot and t.id != task.id
                         and t.state in ("failed", "rejected", "shutdown"))
            replicas.append({
                "service": obs.service,
                "replica": names.replica_name(obs.service, obs.role, task.slot, task.id),
                "release": task.release,
                "subset": obs.subset,  # labels follow a blue/green swap
                "state": replica_state(task), "pid": None,
                "address": task.address, "restarts": failed, "reason": task.error,
                "node": task.node, "task": task.id, "container": task.container})
    replicas.sort(key=lambda r: (r["service"], r["subset"], r["replica"]))
    return {"app": app, "engine": "swarm", "replicas": replicas}


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
    return {"gateway": f"127.0.0.1:{manifest.gateway.port}", "metrics": metrics,
            "routes": [r.model_dump(mode="json") for r in manifest.routes],
            "services": services}
