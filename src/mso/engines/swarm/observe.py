"""What runs on the Swarm, read from the Docker API's service and task documents (pure).

`parse` turns the raw JSON of `GET /services` and `GET /tasks` into `ServiceObs` and
`TaskObs`. A task is ready when Swarm says it is running: with a healthcheck, Swarm keeps
a task in `starting` until the check passes, so this also means healthy. A task whose
desired state is no longer `running` is stopping and gets no new traffic. A task whose
shim reports readiness (`TaskObs.shim_status`) and whose last check said `not ready`
(`not_ready`; the controller reads it with `without_unready`) is not ready either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mso.engines.images import supervision
from mso.engines.swarm import names
from mso.engines.swarm.names import Role


@dataclass(frozen=True)
class TaskObs:
    id: str
    slot: int | None
    node: str
    release: int
    state: str
    desired: str
    address: str | None  # the task's IP on the app's network
    error: str
    container: str
    ready: bool
    stopping: bool
    timestamp: str
    shim_status: bool = False  # its healthcheck reads the shim's status (see spec.py)


@dataclass(frozen=True)
class ServiceObs:
    id: str
    name: str
    service: str
    role: Role
    subset: str
    release: int
    deploy_hash: str
    replicas: int
    version: int
    tasks: tuple[TaskObs, ...]

    def live(self) -> list[TaskObs]:
        return [t for t in self.tasks if t.desired == "running" or t.state == "running"]

    def completed(self) -> bool:
        return any(t.state == "complete" for t in self.tasks)

    def active(self) -> bool:
        """A task is on its way or running (not every one has ended)."""
        return any(t.state in _LIVE_STATES for t in self.tasks)

    def ready_on(self, release: int) -> int:
        return sum(1 for t in self.tasks if t.ready and t.release == release)

    def settled_on(self, release: int, replicas: int) -> bool:
        """Every live task runs `release` and is ready, and there are `replicas` of them."""
        live = [t for t in self.tasks if not t.stopping and t.state in _LIVE_STATES]
        return (len(live) == replicas and all(t.ready and t.release == release for t in live)
                and not any(t.state == "running" and t.stopping for t in self.tasks))


_LIVE_STATES = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting",
                "running"}


def _task(raw: dict[str, Any], network_id: str) -> TaskObs:
    status = raw.get("Status") or {}
    state = str(status.get("State", ""))
    desired = str(raw.get("DesiredState", ""))
    labels = ((raw.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
    address = None
    for attachment in raw.get("NetworksAttachments") or []:
        net = attachment.get("Network") or {}
        if net.get("ID") == network_id or (net.get("Spec") or {}).get("Name") == network_id:
            addrs = attachment.get("Addresses") or []
            address = addrs[0].split("/")[0] if addrs else None
    container = ((status.get("ContainerStatus") or {}).get("ContainerID")) or ""
    stopping = desired not in ("running", "ready", "")
    check = ((raw.get("Spec") or {}).get("ContainerSpec") or {}).get("Healthcheck") or {}
    test = [str(part) for part in check.get("Test") or []]
    return TaskObs(id=str(raw["ID"]), slot=raw.get("Slot"), node=str(raw.get("NodeID", "")),
                   release=int(labels.get(names.LABEL_RELEASE, 0)), state=state,
                   desired=desired, address=address, error=str(status.get("Err", "")),
                   container=container, ready=state == "running" and not stopping
                   and address is not None, stopping=stopping,
                   timestamp=str(status.get("Timestamp", "")),
                   shim_status=test[1:] == supervision.STATUS_CHECK)


def not_ready(health: dict[str, Any] | None) -> bool:
    """Whether a container's Docker health record (`State.Health`) has the shim's last
    check saying `not ready` (the check passes then: only readiness is lost)."""
    log = (health or {}).get("Log") or []
    return bool(log) and str(log[-1].get("Output", "")).startswith("not ready")


def watched(observed: list[ServiceObs]) -> list[str]:
    """Containers whose readiness only their shim's check output tells: ready tasks with
    a status healthcheck."""
    return [t.container for o in observed for t in o.tasks
            if t.ready and t.shim_status and t.container]


def without_unready(observed: list[ServiceObs], unready: set[str]) -> list[ServiceObs]:
    """`observed` with the tasks of the `unready` containers not ready."""
    if not unready:
        return observed
    return [replace(o, tasks=tuple(replace(t, ready=False) if t.container in unready else t
                                   for t in o.tasks)) for o in observed]


def parse(services: list[dict[str, Any]], tasks: list[dict[str, Any]],
          network_id: str) -> list[ServiceObs]:
    by_service: dict[str, list[TaskObs]] = {}
    for raw in tasks:
        by_service.setdefault(str(raw.get("ServiceID")), []).append(_task(raw, network_id))
    out: list[ServiceObs] = []
    for raw in services:
        spec = raw.get("Spec") or {}
        labels = spec.get("Labels") or {}
        role = labels.get(names.LABEL_ROLE)
        if role not in ("main", "second", "gateway", "job"):
            continue
        replicas = int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 0))
        out.append(ServiceObs(
            id=str(raw["ID"]), name=str(spec.get("Name")),
            service=str(labels.get(names.LABEL_SERVICE, "")), role=role,
            subset=str(labels.get(names.LABEL_SUBSET, "stable")),
            release=int(labels.get(names.LABEL_RELEASE, 0)),
            deploy_hash=str(labels.get(names.LABEL_DEPLOY_HASH, "")), replicas=replicas,
            version=int((raw.get("Version") or {}).get("Index", 0)),
            tasks=tuple(sorted(by_service.get(str(raw["ID"]), []),
                               key=lambda t: (t.slot or 0, t.timestamp)))))
    return out
