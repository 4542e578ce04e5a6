"""The JSON shapes of the API (and so of `mso ... -o json`), as MANIFEST.md fixes them."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from mso.engines.local.states import ALIVE_STATES
from mso.store.db import Store

if TYPE_CHECKING:
    from mso.daemon.core import Daemon

FOLLOW_POLL = 0.2


def ps(daemon: Daemon) -> dict[str, Any]:
    rows = []
    for managed in sorted(daemon.book.replicas.values(),
                          key=lambda m: (m.record.service, m.record.subset, m.record.ordinal)):
        rec = managed.record
        supervisor = managed.supervisor
        port = next(iter(rec.ports.values()), None)
        problem = supervisor.problem()
        # A pid only while a process exists: a BACKOFF row showing the dead one's pid
        # invites a `kill` of whatever reuses it.
        pid = (supervisor.ref.pid if supervisor.ref else rec.pid) \
            if supervisor.state in ALIVE_STATES else None
        rows.append({
            "service": rec.service, "replica": rec.id, "release": rec.release,
            "subset": rec.subset, "state": supervisor.state.name,
            "pid": pid, "address": f"127.0.0.1:{port}" if port else None,
            "ports": rec.ports, "restarts": supervisor.restarts,
            "spec_hash": rec.spec_hash[:12], "reason": supervisor.last_reason,
            "problem": problem.to_json() if problem else None,
            "draining": managed.stopping, "resources": _resources(managed),
            "generation": managed.epoch})
    return {"app": daemon.app_name(), "replicas": rows, "jobs": daemon.jobs.summary(),
            "waiting": daemon.waiting(), "store": daemon.store.health.as_json(),
            "autoscale": daemon.autoscale_status()}


def _resources(managed: Any) -> dict[str, Any]:
    spec = managed.supervisor.spec
    group = managed.supervisor.cgroup
    if spec.cpu is None and spec.memory is None:
        return {}
    enforced = dict(group.enforced) if group is not None else {}
    asked = {"cpu": spec.cpu, "memory": spec.memory}
    missing = [k for k, v in asked.items() if v is not None and not enforced.get(k)]
    return {**asked, "enforced": not missing,
            "reason": (group.reason if group is not None and group.reason else
                       f"not enforced: {', '.join(missing)}") if missing else ""}


def endpoints(daemon: Daemon) -> dict[str, Any]:
    config = daemon.app_config()
    gateway = config.get("gateway", {"bind": "127.0.0.1", "port": 8080})
    table = daemon.route_table()
    services: dict[str, Any] = {}
    clusters = table["clusters"]
    for listener in table["listeners"]:
        cluster = listener.get("cluster")
        if listener["name"] in ("gateway", "metrics") or cluster is None:
            continue
        service = clusters[cluster]["service"]
        entry = services.setdefault(service, {"address": f"127.0.0.1:{listener['port']}",
                                              "ports": {}, "endpoints": []})
        port_name = cluster.split("/", 1)[1]
        entry["ports"][port_name] = {"address": f"127.0.0.1:{listener['port']}",
                                     "protocol": listener["mode"]}
    for routing in daemon.routing():
        entry = services.setdefault(routing.name, {"address": None, "ports": {},
                                                   "endpoints": []})
        for ep in sorted(routing.endpoints, key=lambda e: e.id):
            port = next(iter(ep.ports.values()), None)
            entry["endpoints"].append({
                "replica": ep.id, "address": f"{ep.host}:{port}" if port else None,
                "subset": ep.subset, "weight": routing.weights.get(ep.subset, 0),
                "ready": ep.ready and ep.id not in daemon._draining})
    tls = gateway.get("tls")
    return {"gateway": f"{gateway['bind']}:{gateway['port']}",
            **({"gateway_tls": f"{gateway['bind']}:{tls['port']}"} if tls else {}),
            **({"max_connections_per_client": gateway["max_connections_per_client"]}
               if gateway.get("max_connections_per_client") else {}),
            "metrics": f"http://{gateway['bind']}:{daemon.metrics_port()}/metrics",
            "routes": config.get("routes", []), "services": services}


def releases(store: Store, service: str) -> list[dict[str, Any]]:
    desired = store.desired().get(service)
    out = []
    for rel in store.releases(service):
        out.append({"number": rel.number, "spec_hash": rel.spec_hash,
                    "created": dt.datetime.fromtimestamp(rel.created, dt.timezone.utc)
                    .isoformat(timespec="seconds"),
                    "author": rel.author, "change": rel.change, "outcome": rel.outcome,
                    "current": desired is not None and desired.release == rel.number})
    return out


async def follow_events(daemon: Daemon, after: int,
                        service: str | None) -> AsyncIterator[dict[str, Any]]:
    last = after
    while True:
        batch = daemon.store.events(last, service, 1000)
        for event in batch:
            last = event.id
            yield event.as_json()
        if not batch:
            await asyncio.sleep(FOLLOW_POLL)
