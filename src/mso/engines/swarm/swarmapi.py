"""The Docker API as the Swarm engine uses it: a narrow wrapper that translates errors.

Every Docker SDK exception becomes `SwarmError` with a one-line reason here, at the
boundary; nothing above this module imports `docker`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import docker  # type: ignore[import-untyped]
import docker.errors  # type: ignore[import-untyped]

from mso.engines.remote import RemoteEngineError
from mso.engines.swarm import names
from mso.engines.swarm.spec import SecretRef, ServiceSpec, with_ids


class SwarmError(RemoteEngineError):
    """A Swarm operation failed; the message says what and, when known, how to fix it."""


def _explain(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        return str(exc.explanation or exc)
    return str(exc)


class SwarmApi:
    """One connection to the Docker engine of a Swarm manager."""

    def __init__(self, client: Any | None = None) -> None:
        try:
            self.client = client or docker.from_env(version="auto", timeout=120)
            info = self.client.info()
        except docker.errors.DockerException as exc:
            raise SwarmError(f"cannot reach the Docker engine ({_explain(exc)}); is dockerd "
                             "running? (see scripts/swarm-lab.sh)") from exc
        swarm = info.get("Swarm") or {}
        if swarm.get("LocalNodeState") != "active" or not swarm.get("ControlAvailable"):
            raise SwarmError("this Docker engine is not a Swarm manager; run "
                             "`docker swarm init --advertise-addr 127.0.0.1` first")
        self.node_id = str(swarm.get("NodeID"))
        self.api = self.client.api

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except docker.errors.NotFound:
            return None
        except docker.errors.DockerException as exc:
            raise SwarmError(f"{what}: {_explain(exc)}") from exc

    # -- reading ----------------------------------------------------------------------------
    def services(self, app: str) -> list[dict[str, Any]]:
        return list(self._call("listing services", self.api.services,
                               filters=names.app_filter(app)) or [])

    def published_ports(self) -> dict[int, str]:
        """Every TCP port a Swarm service publishes -> that service's name."""
        out: dict[int, str] = {}
        for svc in self._call("listing services", self.api.services) or []:
            spec_ports = ((svc.get("Spec") or {}).get("EndpointSpec") or {}).get("Ports") or []
            for port in spec_ports:
                if port.get("PublishedPort") and port.get("Protocol", "tcp") == "tcp":
                    out[int(port["PublishedPort"])] = str(svc["Spec"]["Name"])
        return out

    def tasks(self, service_ids: list[str]) -> list[dict[str, Any]]:
        if not service_ids:
            return []
        return list(self._call("listing tasks", self.api.tasks,
                               filters={"service": service_ids}) or [])

    def container_health(self, container_id: str) -> dict[str, Any] | None:
        """`State.Health` of a container on this node (None: no healthcheck, or the
        container is elsewhere or gone)."""
        found = self._call("inspecting a container", self.api.inspect_container, container_id)
        health = ((found or {}).get("State") or {}).get("Health")
        return dict(health) if health else None

    def container_events(self, app: str) -> Any:
        """Docker's events for the app's containers that change what a task is: started,
        exited, healthcheck verdict changed (not the healthchecks' own `exec_*`s). An
        iterable of dicts that blocks until the next event; `close()` ends it from
        another thread. On its own connection, so it never holds one the rest needs."""
        client = self._call("watching events", docker.from_env, version=self.api_version,
                            timeout=120)
        return self._call("watching events", client.api.events, decode=True, filters={
            "type": ["container"], "label": [f"{names.LABEL_APP}={app}"],
            "event": ["start", "die", "health_status"]})

    @property
    def api_version(self) -> str:
        """The Docker API version this connection speaks."""
        return str(self.api.api_version)

    def network_id(self, name: str) -> str | None:
        found = self._call("listing networks", self.api.networks, names=[name]) or []
        exact = [n for n in found if n.get("Name") == name]
        return str(exact[0]["Id"]) if exact else None

    # -- objects ----------------------------------------------------------------------------
    def ensure_network(self, app: str, name: str) -> str:
        found = self._call("listing networks", self.api.networks, names=[name]) or []
        for net in found:
            if net.get("Name") != name:
                continue
            if (net.get("Labels") or {}).get(names.LABEL_APP) != app:
                raise SwarmError(f"network {name!r} exists but mso did not create it for "
                                 f"{app!r}; pick another with engines.swarm.network")
            return str(net["Id"])
        created = self._call(f"creating network {name}", self.api.create_network, name,
                             driver="overlay", attachable=True, labels=names.base_labels(app))
        return str(created["Id"])

    def ensure_refs(self, app: str, refs: list[SecretRef]) -> dict[str, str]:
        """Create missing secrets/configs (immutable, named by digest); name -> ID."""
        ids: dict[str, str] = {}
        for ref in refs:
            kind = "configs" if ref.config else "secrets"
            lister = self.api.configs if ref.config else self.api.secrets
            found = [x for x in self._call(f"listing {kind}", lister,
                                           filters={"name": ref.name}) or []
                     if (x.get("Spec") or {}).get("Name") == ref.name]
            if found:
                ids[ref.name] = str(found[0]["ID"])
                continue
            creator = self.api.create_config if ref.config else self.api.create_secret
            created = self._call(f"creating {kind[:-1]} {ref.name}", creator, ref.name,
                                 ref.data, labels=names.base_labels(app))
            ids[ref.name] = str(created["ID"])
        return ids

    def apply(self, spec: ServiceSpec, ids: dict[str, str], existing: dict[str, Any] | None,
              extra: dict[str, Any] | None = None) -> None:
        """Create the service, or update it to `spec` (Swarm restarts tasks only when
        the task template changed)."""
        template = with_ids(spec.task_template, spec.refs, ids)
        extra = extra or {}
        kwargs = {"name": spec.name, "labels": spec.labels,
                  "mode": extra.get("mode", {"Replicated": {"Replicas": spec.replicas}}),
                  "update_config": extra.get("update_config", spec.update_config),
                  "endpoint_spec": extra.get("endpoint_spec", spec.endpoint_spec)}
        if existing is None:
            self._call(f"creating service {spec.name}", self.api.create_service, template,
                       **kwargs)
            return
        version = int(existing["Version"]["Index"])
        self._call(f"updating service {spec.name}", self.api.update_service, existing["ID"],
                   version, task_template=template, **kwargs)

    def remove_service(self, service_id: str) -> None:
        self._call("removing a service", self.api.remove_service, service_id)

    def logs(self, service_id: str, follow: bool, since: float | None,
             tail: int | None) -> Iterator[tuple[str, bytes]]:
        """(stream, bytes) frames of `docker service logs` (timestamps and details on):
        the service's tasks that Swarm counts as started, exited ones too (not a task
        still `starting`, i.e. waiting for its healthcheck: `container_logs` reads
        those). docker-py's `service_logs` drops which stream a frame came from, so the
        frames are read here."""
        return self._log_frames("/services/{0}/logs", service_id, follow, since, tail, True)

    def container_logs(self, container_id: str, tail: int | None
                       ) -> list[tuple[str, bytes]] | None:
        """(stream, bytes) frames of a container on this node (timestamps on), exited
        or not; None when it is not here (another node, or removed)."""
        try:
            return list(self._log_frames("/containers/{0}/logs", container_id, False, None,
                                         tail, False, missing=LookupError))
        except LookupError:
            return None

    def _log_frames(self, path: str, ident: str, follow: bool, since: float | None,
                    tail: int | None, details: bool,
                    missing: type[Exception] | None = None) -> Iterator[tuple[str, bytes]]:
        params: dict[str, Any] = {"stdout": True, "stderr": True, "follow": follow,
                                  "timestamps": True, "details": details,
                                  "tail": "all" if tail is None else tail}
        if since is not None:
            params["since"] = int(since)
        try:
            response = self.api._get(self.api._url(path, ident), params=params, stream=True)
            if response.status_code == 404:
                if missing is not None:
                    raise missing(ident)
                return
            self.api._raise_for_status(response)
            if follow:  # a quiet service must not end the stream with a read timeout
                self.api._disable_socket_timeout(self.api._get_raw_response_socket(response))
            yield from _frames(response.raw)
        except docker.errors.DockerException as exc:
            raise SwarmError(f"reading logs: {_explain(exc)}") from exc
        except OSError as exc:
            raise SwarmError(f"reading logs: {exc}") from exc

    # -- removing everything --------------------------------------------------------------
    def remove_app(self, app: str, timeout: float = 90.0) -> list[str]:
        """Remove every service, then network, secret and config labelled for `app`."""
        removed: list[str] = []
        for svc in self.services(app):
            self.remove_service(svc["ID"])
            removed.append(f"service {svc['Spec']['Name']}")
        self._wait_containers_gone(app, timeout)
        filters = names.app_filter(app)
        deadline = time.monotonic() + timeout
        # Until nothing is listed: the node keeps a local copy of a removed overlay network
        # until its last (exited) task container is reaped, and `down` must not return
        # while `docker network ls` still shows it.
        while True:
            left = [("network", n["Id"], n["Name"], self.api.remove_network)
                    for n in self._call("listing networks", self.api.networks,
                                        filters=filters) or []]
            left += [("secret", x["ID"], x["Spec"]["Name"], self.api.remove_secret)
                     for x in self._call("listing secrets", self.api.secrets,
                                         filters=filters) or []]
            left += [("config", x["ID"], x["Spec"]["Name"], self.api.remove_config)
                     for x in self._call("listing configs", self.api.configs,
                                         filters=filters) or []]
            if not left:
                return removed
            if time.monotonic() > deadline:
                raise SwarmError("still present after `down`: "
                                 + ", ".join(f"{kind} {name}" for kind, _, name, _ in left))
            for kind, ident, name, remove in left:
                self._remove_retrying(remove, ident, max(1.0, deadline - time.monotonic()))
                if f"{kind} {name}" not in removed:
                    removed.append(f"{kind} {name}")
            time.sleep(0.3)

    def _wait_containers_gone(self, app: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        label = [f"{names.LABEL_APP}={app}", f"{names.LABEL_MANAGED}=true"]
        while time.monotonic() < deadline:
            left = self._call("listing containers", self.api.containers, all=True,
                              filters={"label": label}) or []
            if not [c for c in left if c.get("State") in ("running", "created", "restarting")]:
                return
            time.sleep(0.3)

    def _remove_retrying(self, fn: Any, ident: str, timeout: float) -> None:
        # A network/secret stays "in use" until Swarm has cleaned up the tasks using it.
        deadline = time.monotonic() + timeout
        while True:
            try:
                fn(ident)
                return
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if time.monotonic() > deadline:
                    raise SwarmError(f"cannot remove {ident}: {_explain(exc)}") from exc
                time.sleep(0.5)


def _frames(raw: Any) -> Iterator[tuple[str, bytes]]:
    """Docker's multiplexed stream: an 8-byte header (stream 1 stdout, 2 stderr; length)
    before each frame."""
    while True:
        header = raw.read(8)
        if len(header) < 8:
            return
        kind, length = struct.unpack(">BxxxL", header)
        data = raw.read(length) if length else b""
        yield ("stderr" if kind == 2 else "stdout"), data
