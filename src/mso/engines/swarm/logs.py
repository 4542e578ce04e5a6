"""`mso logs [-f]` on Swarm: `docker service logs` of each service, merged into records.

Each service's stream is read by its own thread (the Docker API blocks while following)
and lines are merged through a queue. Records have the local engine's fields: `ts`,
`service`, `replica`, `stream`, `line`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from mso.engines.swarm import names
from mso.engines.swarm.diagnose import epoch, task_release
from mso.engines.swarm.swarmapi import SwarmApi, SwarmError

_DONE = object()


def parse_line(raw: str, service: str, replicas: dict[str, tuple[str, int]],
               stream: str = "stdout") -> dict[str, Any] | None:
    """`<RFC3339 ts> <k=v,...> <message>` (timestamps and details on) -> a record;
    `replicas`: task ID -> (replica name, release)."""
    stamp, _, rest = raw.partition(" ")
    details, _, message = rest.partition(" ")
    if "=" not in details:
        details, message = "", rest
    fields = dict(p.split("=", 1) for p in details.split(",") if "=" in p)
    task = fields.get("com.docker.swarm.task.id", "")
    ts = epoch(stamp)
    if ts is None:
        return None
    replica, release = replicas.get(task, (task[:12] or service, 0))
    return {"ts": ts, "service": service, "replica": replica, "release": release,
            "stream": stream, "line": message}


def _replicas(api: SwarmApi, services: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    by_id = {s["ID"]: s for s in services}
    for task in api.tasks(list(by_id)):
        labels = by_id[task["ServiceID"]]["Spec"].get("Labels") or {}
        role = labels.get(names.LABEL_ROLE, "main")
        out[task["ID"]] = (names.replica_name(labels.get(names.LABEL_SERVICE, "?"), role,
                                              task.get("Slot"), task["ID"]),
                           task_release(task))
    return out


def _reader(api: SwarmApi, svc: dict[str, Any], follow: bool, since: float | None,
            tail: int | None, replicas: dict[str, tuple[str, int]],
            out: queue.Queue[Any]) -> None:
    service = (svc["Spec"].get("Labels") or {}).get(names.LABEL_SERVICE, "?")
    buffers = {"stdout": b"", "stderr": b""}
    try:
        for stream, chunk in api.logs(svc["ID"], follow, since, tail):
            buffers[stream] += chunk
            *lines, buffers[stream] = buffers[stream].split(b"\n")
            for line in lines:
                record = parse_line(line.decode("utf-8", "replace"), service, replicas, stream)
                if record is not None:
                    out.put(record)
    except SwarmError as exc:
        out.put(exc)
    finally:
        out.put(_DONE)


def _services(api: SwarmApi, app: str, service: str | None) -> list[dict[str, Any]]:
    return [s for s in api.services(app)
            if (s["Spec"].get("Labels") or {}).get(names.LABEL_ROLE) != "gateway"
            and (service is None or
                 (s["Spec"].get("Labels") or {}).get(names.LABEL_SERVICE) == service)]


def follow_logs(api: SwarmApi, app: str, service: str | None, follow: bool,
                since: float | None, tail: int | None) -> Iterator[dict[str, Any]]:
    services = _services(api, app, service)
    replicas = _replicas(api, services)
    out: queue.Queue[Any] = queue.Queue(maxsize=10_000)
    for svc in services:
        threading.Thread(target=_reader, args=(api, svc, follow, since, tail, replicas, out),
                         daemon=True).start()
    running = len(services)
    if follow:
        while running:
            item = out.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, SwarmError):
                raise item
            else:
                yield item
        return
    records: list[dict[str, Any]] = []
    while running:
        item = out.get()
        if item is _DONE:
            running -= 1
        elif not isinstance(item, SwarmError):
            records.append(item)
    records += _starting(api, services, since, tail, records)
    yield from sorted(records, key=lambda r: r["ts"])


def _starting(api: SwarmApi, services: list[dict[str, Any]], since: float | None,
              tail: int | None, seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lines of tasks still waiting for their healthcheck, which `docker service logs`
    leaves out, read from their containers on this node."""
    by_id = {s["ID"]: s for s in services}
    known = {(r["ts"], r["line"]) for r in seen}
    out = []
    for task in api.tasks(list(by_id)):
        if (task.get("Status") or {}).get("State") != "starting":
            continue
        labels = by_id[task["ServiceID"]]["Spec"].get("Labels") or {}
        for record in _container_records(api, task, labels, tail) or []:
            if (since is None or record["ts"] >= since) and \
                    (record["ts"], record["line"]) not in known:
                out.append(record)
    return out


def _container_records(api: SwarmApi, task: dict[str, Any], labels: dict[str, Any],
                       tail: int | None) -> list[dict[str, Any]] | None:
    """The records of a task's container if it is on this node (else None)."""
    container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
    frames = api.container_logs(str(container), tail) if container else None
    if frames is None:
        return None
    service = labels.get(names.LABEL_SERVICE, "?")
    name = names.replica_name(service, labels.get(names.LABEL_ROLE, "main"), task.get("Slot"),
                              task["ID"])
    records = []
    for stream, data in frames:
        for raw in data.decode("utf-8", "replace").splitlines():
            stamp, _, text = raw.partition(" ")
            ts = epoch(stamp)
            if ts is not None:
                records.append({"ts": ts, "service": service, "replica": name,
                                "release": task_release(task), "stream": stream,
                                "line": text})
    return records


def replica_logs(api: SwarmApi, app: str, service: str, replica: str, lines: int,
                 tasks: set[str] | None = None) -> list[dict[str, Any]]:
    """The last `lines` records of one replica: every task of its slot that Swarm still
    keeps (or the `tasks` named, e.g. a job's attempts), exited ones too, oldest first.
    Containers on this node are read directly (`docker service logs` leaves out a task
    still waiting for its healthcheck); the others through the service's logs."""
    services = _services(api, app, service)
    by_id = {s["ID"]: s for s in services}
    records: list[dict[str, Any]] = []
    elsewhere: set[str] = set()
    for task in api.tasks(list(by_id)):
        labels = by_id[task["ServiceID"]]["Spec"].get("Labels") or {}
        name = names.replica_name(labels.get(names.LABEL_SERVICE, "?"),
                                  labels.get(names.LABEL_ROLE, "main"), task.get("Slot"),
                                  task["ID"])
        if (name != replica) if tasks is None else (str(task["ID"]) not in tasks):
            continue
        found = _container_records(api, task, labels, lines)
        if found is None:
            elsewhere.add(str(task["ID"]))
        else:
            records += found
    if elsewhere:  # the same entries as those read directly, where both have them
        seen = {(r["ts"], r["line"]) for r in records}
        records += [r for r in follow_logs(api, app, service, False, None, lines)
                    if (r["replica"] == replica if tasks is None else True)
                    and (r["ts"], r["line"]) not in seen]
    records.sort(key=lambda r: r["ts"])
    return records[-lines:]
