"""The interface the CLI uses for engines that mso drives rather than runs: Swarm, Kubernetes.

The local engine has its own daemon and REST API. A remote engine is driven through its
own API (the Docker API, the Kubernetes API) by an object implementing `RemoteEngine`.
JSON shapes returned here are the same as the local engine's (MANIFEST.md), so scripts
work unchanged whatever the engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from mso.errors import Failed

if TYPE_CHECKING:
    from mso.spec.load import LoadedManifest
    from mso.store.db import Store


@dataclass(frozen=True)
class EngineOptions:
    """Engine-specific command-line settings (all optional)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    version: str | None = None  # render: the target Kubernetes version, e.g. "1.29"


class RemoteEngineError(Failed):
    """A failure of the engine, reported to the user as one line."""


#: Seconds a replica without a readiness probe must have run before a waiting command
#: counts it as up: the engine calls it ready as soon as its container runs, which says
#: nothing about a command that exits a moment later (Docker's own `service create`
#: waits 5 s for the same reason).
UP_AFTER = 3.0


class DeployFailed(RemoteEngineError):
    """A replica of the release being deployed has a problem (mso.engines.problems), so
    the waiting command gives up; the engine goes on as it would have (restarting the
    replica, a rollout deciding by itself).

    `failing`: one dict per failing replica, the `mso ps -o json` row's `service`,
    `replica`, `state`, `reason` and `problem`, plus `logs`: its last REPORT_LOG_LINES
    records in the `mso logs -o json` shape, oldest first (output of exited containers
    included). `mso.cli.output.failure_report` prints them.
    """

    def __init__(self, failing: list[dict[str, Any]]) -> None:
        self.failing = failing
        super().__init__(failure_summary(failing))


def failure_summary(failing: list[dict[str, Any]]) -> str:
    """One line: `deploy failed: api-1 (api) BACKOFF: crash_loop: exited ...; 1 more`."""
    if not failing:
        return "deploy failed"
    first = failing[0]
    kind = (first.get("problem") or {}).get("kind", "problem")
    line = (f"deploy failed: {first.get('replica')} ({first.get('service')}) "
            f"{first.get('state')}: {kind}: {first.get('reason') or ''}").rstrip(": ")
    more = len(failing) - 1
    return line + (f"; {more} more failing replica{'s' if more > 1 else ''}" if more else "")


def failing_replica(row: dict[str, Any], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """The DeployFailed entry of one ps row."""
    return {"service": row["service"], "replica": row["replica"], "state": row["state"],
            "reason": row.get("reason") or "", "problem": row.get("problem"), "logs": logs}


class RemoteEngine(Protocol):
    def deploy(self, loaded: LoadedManifest, wait: bool = True,
               force: bool = False) -> dict[str, Any]: ...

    def render(self, loaded: LoadedManifest, out_dir: Path | None) -> list[Path] | str: ...

    def ps(self, loaded: LoadedManifest) -> dict[str, Any]: ...

    def endpoints(self, loaded: LoadedManifest) -> dict[str, Any]: ...

    def logs(self, loaded: LoadedManifest, service: str | None, follow: bool,
             since: float | None, tail: int | None) -> Iterator[dict[str, Any]]: ...

    def scale(self, loaded: LoadedManifest, service: str, replicas: int) -> None: ...

    def releases(self, loaded: LoadedManifest, service: str) -> list[dict[str, Any]]: ...

    def rollback(self, loaded: LoadedManifest, service: str, to: int | None) -> int: ...

    def rollout(self, loaded: LoadedManifest, action: str, service: str) -> dict[str, Any]: ...

    def down(self, loaded: LoadedManifest) -> None: ...


@runtime_checkable
class SupportsRestart(Protocol):
    """A remote engine that carries out `mso restart SERVICE`: every replica replaced by
    a fresh one of the same release, as the service's rollout strategy says; returns how
    ("rolling" or "recreate"). Engines without it refuse the command."""

    def restart(self, loaded: LoadedManifest, service: str) -> str: ...


@runtime_checkable
class SupportsEvents(Protocol):
    """A remote engine that keeps mso's event log (releases, rollout decisions with their
    numbers), in the local engine's JSON shape: {id, ts, type, service, replica, message,
    data}, oldest first."""

    def events(self, loaded: LoadedManifest, service: str | None, follow: bool,
               tail: int) -> Iterator[dict[str, Any]]: ...


@runtime_checkable
class SupportsDashboard(Protocol):
    """A remote engine whose app the web dashboard can show (mso.web.remote): besides
    the CLI's views, mso's own state of the app (releases with their specs, the event
    log) and the gateway's counters."""

    def state_store(self, loaded: LoadedManifest) -> Store:
        """mso's state of the app kept beside the manifest; the caller closes it."""
        ...

    def metrics(self, loaded: LoadedManifest) -> dict[str, Any]:
        """The gateway's counters: a SNAPSHOT (docs/architecture.md), as the rollout
        analysis reads them."""
        ...


_ENGINES = {
    "swarm": "mso.engines.swarm.engine:SwarmEngine",
    "kubernetes": "mso.engines.kubernetes.engine:KubernetesEngine",
}


def remote_engine(name: str, options: EngineOptions) -> RemoteEngine:
    """Import and build the engine `name` (imports are lazy: docker/kubernetes are heavy)."""
    target = _ENGINES.get(name)
    if target is None:
        raise RemoteEngineError(f"unknown engine {name!r}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RemoteEngineError(f"the {name} engine is not available: {exc}") from exc
    engine: RemoteEngine = getattr(module, cls_name)(options)
    return engine
