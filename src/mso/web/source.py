"""Where the dashboard's figures come from: one `Source` per engine.

The pages (mso.web.data, mso.web.app) read an app only through this protocol, so one
dashboard serves an app on every engine and cannot disagree with the CLI:

* `DaemonSource`: the embedded engine. The dashboard runs in the daemon's event loop
  (mso.web.server) and reads its state directly, with the code the API's handlers run.
* `mso.web.remote.RemoteSource`: Swarm and Kubernetes. The dashboard runs in its own
  process beside the CLI (`python -m mso.web`, started by `mso dashboard`), and reads
  what `mso ps`, `mso endpoints`, `mso rollout status`, `mso releases`, `mso events` and
  `mso logs` read there: the engine's API, the rollout controller's state and the
  gateway's counters.

Every method answers in the local API's JSON shapes (docs/manifest.md). An unknown
service is a KeyError (the pages' 404); a refused action an MsoError (shown on the page).
What may wait on an engine (its API, the controller, the gateway) is a coroutine: a
remote source runs the engine's blocking calls in threads, so one slow answer does not
stall the other pages' live updates.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from mso.api import views
from mso.store.db import Store

if TYPE_CHECKING:
    from mso.daemon.core import Daemon


class Source(Protocol):
    """What the dashboard needs of an app (see the module docstring)."""

    engine: str

    def app_name(self) -> str: ...

    def services(self) -> list[str]:
        """The app's services (not jobs), sorted."""
        ...

    async def ps(self) -> dict[str, Any]:
        """`mso ps -o json`: {app, replicas, jobs, waiting}."""
        ...

    async def endpoints(self) -> dict[str, Any]:
        """`mso endpoints -o json`: {gateway, metrics, routes, services}."""
        ...

    async def weights(self) -> dict[str, dict[str, int]]:
        """Each service's traffic weight per subset, as the proxy routes it now."""
        ...

    def release_of(self, service: str) -> int | None:
        """The service's desired release."""
        ...

    async def rollout_status(self, service: str) -> dict[str, Any]:
        """`mso rollout status SERVICE -o json`; KeyError for an unknown service."""
        ...

    def rollout_active(self, service: str, status: dict[str, Any]) -> bool: ...

    async def rollout_command(self, action: str, service: str) -> dict[str, Any]:
        """promote/abort/pause/resume; the status after it."""
        ...

    def store(self) -> Store:
        """mso's state of this app: releases (with their specs) and the event log."""
        ...

    async def rollback(self, service: str, to: int) -> int:
        """Roll back to release `to`; the number of the release that does it."""
        ...

    async def log_tail(self, service: str, tail: int) -> list[dict[str, Any]]:
        """The service's last log records (`mso logs -o json` shape, redacted)."""
        ...

    def follow_logs(self, service: str) -> AsyncIterator[dict[str, Any]]:
        """The service's log records from now on, as they come."""
        ...

    async def metrics(self) -> Mapping[str, Any]:
        """The proxy's (or gateway's) counters: a SNAPSHOT (docs/architecture.md)."""
        ...

    def clusters(self) -> Mapping[str, str]:
        """The proxy's cluster names (SERVICE/PORT) and the service of each."""
        ...

    async def traces(self) -> list[Any]:
        """The proxy's recent sampled traces (control op `traces`)."""
        ...

    def tracing(self) -> dict[str, Any] | None:
        """The manifest's `tracing:` settings."""
        ...


class DaemonSource:
    """The embedded engine's daemon, read in its own process."""

    engine = "local"

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    def app_name(self) -> str:
        return self.d.app_name()

    def services(self) -> list[str]:
        return sorted(n for n, d in self.d.store.desired().items() if d.kind == "service")

    async def ps(self) -> dict[str, Any]:
        return views.ps(self.d)

    async def endpoints(self) -> dict[str, Any]:
        return views.endpoints(self.d)

    async def weights(self) -> dict[str, dict[str, int]]:
        return {r.name: dict(r.weights) for r in self.d.routing()}

    def release_of(self, service: str) -> int | None:
        desired = self.d.store.desired().get(service)
        return None if desired is None else desired.release

    async def rollout_status(self, service: str) -> dict[str, Any]:
        return self.d.rollouts.status(service)

    def rollout_active(self, service: str, status: dict[str, Any]) -> bool:
        return self.d.rollouts.active(service) is not None

    async def rollout_command(self, action: str, service: str) -> dict[str, Any]:
        after = self.d.rollouts.command(action, service)
        self.d.wake()
        return after

    def store(self) -> Store:
        return self.d.store

    async def rollback(self, service: str, to: int) -> int:
        return self.d.rollback(service, to)

    async def log_tail(self, service: str, tail: int) -> list[dict[str, Any]]:
        return list(self.d.log_store.read(service=service, tail=tail))

    async def follow_logs(self, service: str) -> AsyncIterator[dict[str, Any]]:
        async for record in self.d.log_store.follow(service, since=time.time()):
            yield record

    async def metrics(self) -> Mapping[str, Any]:
        return await self.d.metrics()

    def clusters(self) -> Mapping[str, str]:
        clusters = self.d.route_table()["clusters"]
        return {name: str(c["service"]) for name, c in clusters.items()}

    async def traces(self) -> list[Any]:
        return await self.d.traces()

    def tracing(self) -> dict[str, Any] | None:
        found = self.d.app_config().get("tracing")
        return found if isinstance(found, dict) else None
