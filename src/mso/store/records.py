"""Plain records read from and written to the store.

They are the vocabulary shared by controllers, the API and the CLI, so they carry no
behaviour and no secrets: secret values live only in the `release_secrets` table and in
the replicas' private files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Release:
    """One immutable, numbered version of a service's spec."""

    service: str
    number: int
    spec_hash: str
    spec: dict[str, Any]
    created: float
    author: str
    change: str
    outcome: str


@dataclass(frozen=True)
class Desired:
    """What should run for one service or job."""

    service: str
    kind: str  # "service" | "job"
    release: int
    replicas: int
    manifest_replicas: int


@dataclass
class ReplicaRecord:
    """The observed state of one replica, as last persisted."""

    id: str
    service: str
    ordinal: int
    release: int
    subset: str
    state: str
    pid: int | None
    start_time: int | None
    ports: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    spec_hash: str = ""
    reason: str = ""
    updated: float = 0.0


@dataclass(frozen=True)
class Event:
    """One entry of the event log."""

    id: int
    ts: float
    type: str
    service: str | None
    replica: str | None
    message: str
    data: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "ts": self.ts, "type": self.type, "service": self.service,
                "replica": self.replica, "message": self.message, "data": self.data}
