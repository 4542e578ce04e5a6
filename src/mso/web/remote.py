"""The dashboard of an app on Swarm or Kubernetes (`mso dashboard` there).

mso runs no daemon for those engines, so the dashboard runs in its own process beside
the CLI (`python -m mso.web`, which `mso dashboard` starts in the foreground, like
`kubectl proxy` or Argo Rollouts' `kubectl argo rollouts dashboard`) until Ctrl-C. It
reads exactly what the CLI reads there, through the engine's `RemoteEngine` object:
replicas and endpoints from the engine's API (`mso ps`, `mso endpoints`), rollouts from
the rollout controller (`mso rollout status`, which also carries the judge's numbers),
releases and events from mso's state of the app kept beside the manifest, log lines from
the engine (`mso logs`), and the gateway's counters (what the analysis reads) for the
charts. Actions (promote, abort, pause, resume, rollback) are the CLI's.

Log lines are polled (every `LOG_POLL` seconds, newer than the last one shown) rather
than followed: following keeps one stream per replica open in a thread that only the
process's end stops, which a page left open and closed again would pile up.

Weights: the gateway's table is not kept here; a service's weights are read from its
rollout's status (all to `stable` when none runs), which is what the controller
pushes to the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from mso.engines.remote import RemoteEngineError, SupportsDashboard
from mso.store.db import Store
from mso.strategies.state import ACTIVE_PHASES

if TYPE_CHECKING:
    from mso.engines.remote import RemoteEngine
    from mso.spec.load import LoadedManifest

LOG_POLL = 2.0  # seconds between two reads of a service's new log lines


class RemoteSource:
    """A Swarm or Kubernetes app, read through its engine (see the module docstring)."""

    def __init__(self, engine: str, remote: RemoteEngine, loaded: LoadedManifest) -> None:
        if not isinstance(remote, SupportsDashboard):
            raise RemoteEngineError(f"the {engine} engine cannot serve the dashboard")
        self.engine = engine
        self._remote = remote
        self._dash: SupportsDashboard = remote
        self._loaded = loaded
        self._store: Store = remote.state_store(loaded)

    def close(self) -> None:
        self._store.close()

    def app_name(self) -> str:
        return self._loaded.manifest.app

    def services(self) -> list[str]:
        return sorted(self._loaded.manifest.services)

    def _known(self, service: str) -> None:
        if service not in self._loaded.manifest.services:
            raise KeyError(service)

    async def ps(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._remote.ps, self._loaded)

    async def endpoints(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._remote.endpoints, self._loaded)

    async def weights(self) -> dict[str, dict[str, int]]:
        names = self.services()
        statuses = await asyncio.gather(*(self.rollout_status(n) for n in names))
        return {name: weights_of(status) for name, status in zip(names, statuses)}

    def release_of(self, service: str) -> int | None:
        desired = self._store.desired().get(service)
        return None if desired is None else desired.release

    async def rollout_status(self, service: str) -> dict[str, Any]:
        return await self.rollout_command("status", service)

    def rollout_active(self, service: str, status: dict[str, Any]) -> bool:
        return status.get("phase") in {p.value for p in ACTIVE_PHASES}

    async def rollout_command(self, action: str, service: str) -> dict[str, Any]:
        self._known(service)
        return await asyncio.to_thread(self._remote.rollout, self._loaded, action, service)

    def store(self) -> Store:
        return self._store

    async def rollback(self, service: str, to: int) -> int:
        self._known(service)
        return await asyncio.to_thread(self._remote.rollback, self._loaded, service, to)

    async def log_tail(self, service: str, tail: int) -> list[dict[str, Any]]:
        self._known(service)
        return await asyncio.to_thread(
            lambda: list(self._remote.logs(self._loaded, service, False, None, tail)))

    async def follow_logs(self, service: str) -> AsyncIterator[dict[str, Any]]:
        self._known(service)
        shown = await self.log_tail(service, 1)
        since = max((float(r["ts"]) for r in shown), default=0.0)
        seen = {(r["ts"], r["line"]) for r in shown}
        while True:
            await asyncio.sleep(LOG_POLL)
            try:
                found = await asyncio.to_thread(
                    lambda: list(self._remote.logs(self._loaded, service, False,
                                                   since or None, None)))
            except RemoteEngineError:
                continue  # a replica going away mid-read: try again at the next poll
            new = [r for r in found if (r["ts"], r["line"]) not in seen
                   and float(r["ts"]) >= since]
            for record in sorted(new, key=lambda r: float(r["ts"])):
                yield record
            if new:
                since = max(float(r["ts"]) for r in new)
                seen = {(r["ts"], r["line"]) for r in new if float(r["ts"]) == since}

    async def metrics(self) -> Mapping[str, Any]:
        return await asyncio.to_thread(self._dash.metrics, self._loaded)

    def clusters(self) -> Mapping[str, str]:
        return {f"{name}/{port}": name
                for name, svc in self._loaded.manifest.services.items() for port in svc.ports}

    async def traces(self) -> list[Any]:
        return []  # `tracing` is refused on these engines (mso.spec.support)

    def tracing(self) -> dict[str, Any] | None:
        return None


def weights_of(status: Mapping[str, Any]) -> dict[str, int]:
    """A service's weights per subset from its rollout's status: the canary's weight
    while a canary or blue/green rollout runs, everything to stable otherwise."""
    weight = status.get("weight")
    if status.get("phase") not in {p.value for p in ACTIVE_PHASES} or weight is None:
        return {"stable": 100}
    canary = max(0, min(100, int(weight)))
    return {"stable": 100 - canary, "canary": canary}
