"""One `Engine` for the commands, whatever runs the app.

The commands that look at or act on a running app (`ps`, `endpoints`, `logs`, `events`,
`scale`, `restart`, `releases`, `rollback`, `rollout`) see only this protocol, so the CLI
does not branch on the engine: `LocalEngine` talks to the embedded engine's daemon over
its API (and, for the read-only commands, reads `.mso/` directly when no daemon runs);
`RemoteApp` drives a Swarm or Kubernetes engine (mso.engines.remote) for one manifest.
Every method answers in the JSON shapes of the local API, so `-o json` is the same on
every engine. Commands with engine-specific flows (`up`, `deploy`, `render`, `run`) keep
their own code.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mso.cli.client import ApiClient, CliError
from mso.paths import StatePaths

if TYPE_CHECKING:
    from mso.engines.remote import RemoteEngine
    from mso.spec.load import LoadedManifest

NOT_RUNNING = "mso: not following: mso is not running (start it with `mso up`)"


class Engine(Protocol):
    name: str

    def ps(self) -> dict[str, Any]: ...

    def endpoints(self) -> dict[str, Any]: ...

    def logs(self, service: str | None, follow: bool, since: float | None,
             tail: int | None) -> Iterator[dict[str, Any]]: ...

    def events(self, service: str | None, follow: bool,
               tail: int) -> Iterator[dict[str, Any]]: ...

    def scale(self, service: str, replicas: int) -> int: ...

    def restart(self, service: str) -> str: ...

    def releases(self, service: str) -> list[dict[str, Any]]: ...

    def rollback(self, service: str, to: int | None) -> int: ...

    def rollout(self, action: str, service: str) -> dict[str, Any]: ...


class LocalEngine:
    """The embedded engine: its daemon's API, or `.mso/` when no daemon runs (read-only
    commands only; the others say that no daemon runs)."""

    name = "local"

    def __init__(self, manifest: Path, no_app: Callable[[Path], CliError],
                 note: Callable[[str], None]) -> None:
        self.manifest = manifest
        self.paths = StatePaths.for_manifest(manifest)
        self._no_app = no_app
        self._note = note
        self._client: ApiClient | None = None
        self._alive: bool | None = None

    # -- where the answers come from --------------------------------------------------
    def client(self) -> ApiClient:
        """The daemon's API (for commands that need it running)."""
        if not self.manifest.exists() and not self.paths.db.exists():
            raise self._no_app(self.manifest)
        if self._client is None:
            self._client = ApiClient(self.paths)
        return self._client

    def _reader(self) -> ApiClient | None:
        """The API when the daemon runs, else None: read `.mso/` directly."""
        if self._alive is None:
            client = ApiClient(self.paths)
            self._alive = client.alive()
            if self._alive:
                self._client = client
            elif not self.paths.db.exists():
                raise self._no_app(self.manifest)
        return self._client if self._alive else None

    # -- Engine -----------------------------------------------------------------------
    def ps(self) -> dict[str, Any]:
        client = self._reader()
        if client is None:
            from mso.cli import offline  # only without a daemon: its imports cost
            return offline.ps(self.paths)
        data: dict[str, Any] = client.get("/v1/ps")
        if self.manifest.exists():
            try:
                data["drift"] = client.post("/v1/diff", {"manifest": str(self.manifest),
                                                         "environ": dict(os.environ)})["drift"]
            except CliError:  # an invalid manifest: `mso validate` says why; ps still works
                data["drift"] = []
        return data

    def endpoints(self) -> dict[str, Any]:
        return dict(self.client().get("/v1/endpoints"))

    def logs(self, service: str | None, follow: bool, since: float | None,
             tail: int | None) -> Iterator[dict[str, Any]]:
        client = self._reader()
        params: dict[str, Any] = {"service": service, "since": since, "tail": tail}
        if client is not None:
            if follow:
                yield from client.stream("GET", "/v1/logs", follow="true", **params)
            else:
                yield from client.get("/v1/logs", **params)
            return
        if service is not None:
            from mso.cli import offline
            offline.releases(self.paths, service)  # unknown service: an error, as with a daemon
        from mso.cli import offline
        yield from offline.logs(self.paths, service, since, tail)
        if follow:
            self._note(NOT_RUNNING)

    def events(self, service: str | None, follow: bool,
               tail: int) -> Iterator[dict[str, Any]]:
        client = self._reader()
        if client is None:
            from mso.cli import offline
            yield from offline.events(self.paths, service, tail)
            if follow:
                self._note(NOT_RUNNING)
            return
        records = client.get("/v1/events", service=service, limit=tail)
        yield from records
        if follow:
            after = records[-1]["id"] if records else 0
            yield from client.stream("GET", "/v1/events", follow="true", after=after,
                                     service=service)

    def scale(self, service: str, replicas: int) -> int:
        result = self.client().post(f"/v1/services/{service}/scale", {"replicas": replicas})
        return int(result["replicas"])

    def restart(self, service: str) -> str:
        result = self.client().post(f"/v1/services/{service}/restart")
        return str(result.get("strategy", "rolling"))

    def releases(self, service: str) -> list[dict[str, Any]]:
        client = self._reader()
        if client is None:
            from mso.cli import offline
            return offline.releases(self.paths, service)
        return list(client.get(f"/v1/services/{service}/releases"))

    def rollback(self, service: str, to: int | None) -> int:
        return int(self.client().post(f"/v1/services/{service}/rollback",
                                      {"to": to})["release"])

    def rollout(self, action: str, service: str) -> dict[str, Any]:
        if action == "status":
            client = self._reader()
            if client is None:
                from mso.cli import offline
                return offline.rollout_status(self.paths, service)
            return dict(client.get(f"/v1/services/{service}/rollout"))
        return dict(self.client().post(f"/v1/services/{service}/rollout/{action}"))


class RemoteApp:
    """A Swarm or Kubernetes engine, for one manifest."""

    def __init__(self, name: str, engine: RemoteEngine, loaded: LoadedManifest) -> None:
        self.name = name
        self.engine = engine
        self.loaded = loaded

    def ps(self) -> dict[str, Any]:
        return self.engine.ps(self.loaded)

    def endpoints(self) -> dict[str, Any]:
        return self.engine.endpoints(self.loaded)

    def logs(self, service: str | None, follow: bool, since: float | None,
             tail: int | None) -> Iterator[dict[str, Any]]:
        return self.engine.logs(self.loaded, service, follow, since, tail)

    def events(self, service: str | None, follow: bool,
               tail: int) -> Iterator[dict[str, Any]]:
        from mso.engines.remote import SupportsEvents
        if not isinstance(self.engine, SupportsEvents):
            raise CliError(f"mso events: not supported on {self.name} yet", 2)
        return self.engine.events(self.loaded, service, follow, tail)

    def scale(self, service: str, replicas: int) -> int:
        self.engine.scale(self.loaded, service, replicas)
        return replicas

    def restart(self, service: str) -> str:
        from mso.engines.remote import SupportsRestart
        if not isinstance(self.engine, SupportsRestart):
            raise CliError(f"mso restart: not supported on {self.name} yet; deploy a "
                           "changed manifest (a new release) instead", 2)
        return self.engine.restart(self.loaded, service)

    def releases(self, service: str) -> list[dict[str, Any]]:
        return self.engine.releases(self.loaded, service)

    def rollback(self, service: str, to: int | None) -> int:
        return self.engine.rollback(self.loaded, service, to)

    def rollout(self, action: str, service: str) -> dict[str, Any]:
        return self.engine.rollout(self.loaded, action, service)
