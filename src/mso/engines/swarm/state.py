"""Where the Swarm engine keeps its state, and the typed records stored there.

State lives beside the manifest, in `.mso/swarm.db` (a separate SQLite file from the
local daemon's) and `.mso/swarm/` (controller log, lock and pid). Unix socket paths are
short-lived under `/tmp/mso-<uid>/`: the gateway's control socket folder is bind-mounted
into the gateway container, and socket paths must stay under ~100 bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mso.engines.swarm.gateway import allocate_ports
from mso.engines.swarm.plan import Progress
from mso.engines.swarm.swarmapi import SwarmError
from mso.releases.ports import port_map
from mso.store.db import Store

APP_KEY = "swarm.app"
IMAGES_KEY = "swarm.images"
PORTS_KEY = "swarm.stable_ports"
PROGRESS_KEY = "swarm.progress"
TABLE_KEY = "swarm.table"
STATUS_KEY = "swarm.status"
METRICS_KEY = "mso/metrics"  # the gateway's metrics port among the stable ports


@dataclass(frozen=True)
class SwarmPaths:
    state_dir: Path

    @classmethod
    def for_manifest(cls, manifest: Path) -> SwarmPaths:
        return cls(manifest.resolve().parent / ".mso")

    @property
    def db(self) -> Path:
        return self.state_dir / "swarm.db"

    @property
    def folder(self) -> Path:
        return self.state_dir / "swarm"

    @property
    def lock(self) -> Path:
        return self.folder / "controller.lock"

    @property
    def log(self) -> Path:
        return self.folder / "controller.log"

    @property
    def _short(self) -> Path:
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:16]
        return Path("/tmp") / f"mso-{os.getuid()}" / f"swarm-{digest}"

    @property
    def control_socket(self) -> Path:
        return self._short / "controller.sock"

    @property
    def gateway_dir(self) -> Path:
        """Bind-mounted into the gateway container at /run/mso."""
        return self._short / "gateway"

    @property
    def gateway_socket(self) -> Path:
        return self.gateway_dir / "control.sock"

    def ensure(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.gateway_dir.mkdir(parents=True, exist_ok=True, mode=0o700)


@dataclass(frozen=True)
class AppConfig:
    """The app-wide settings of the last deploy."""

    app: str
    manifest: str
    base_dir: str
    network: str
    gateway_port: int
    gateway_image: str
    routes: list[dict[str, Any]] = field(default_factory=list)
    strategies: dict[str, str] = field(default_factory=dict)
    preview_ports: list[int] = field(default_factory=list)  # blue/green, published too
    autoscale: dict[str, dict[str, Any]] = field(default_factory=dict)  # service -> spec
    max_connections_per_client: int = 0  # gateway; 0: no limit
    #: `gateway.tls` (mso.controllers.routing.tls_config): the certificate files' paths on
    #: this machine; the controller copies them into the gateway's folder.
    tls: dict[str, Any] | None = None

    @property
    def published_ports(self) -> list[int]:
        """The gateway's published ports besides `gateway_port`: previews and HTTPS."""
        return [*self.preview_ports, *([int(self.tls["port"])] if self.tls else [])]

    @classmethod
    def load(cls, store: Store) -> AppConfig | None:
        raw = store.get_meta(APP_KEY)
        return cls(**json.loads(raw)) if raw else None

    def save(self, store: Store) -> None:
        store.set_meta(APP_KEY, json.dumps(asdict(self), sort_keys=True))


def get_json(store: Store, key: str, default: Any) -> Any:
    raw = store.get_meta(key)
    return json.loads(raw) if raw else default


def set_json(store: Store, key: str, value: Any) -> None:
    store.set_meta(key, json.dumps(value, sort_keys=True))


def image_for(store: Store, service: str, release: int) -> tuple[str, bool] | None:
    """(image, runs under the shim) of a release; a release without one (a rollback copy)
    uses the newest image recorded for an older release."""
    images: dict[str, dict[str, Any]] = get_json(store, IMAGES_KEY, {}).get(service, {})
    known = sorted((int(k), v) for k, v in images.items() if int(k) <= release)
    if not known:
        known = sorted((int(k), v) for k, v in images.items())
    if not known:
        return None
    entry = known[-1][1]
    return str(entry["image"]), bool(entry["shim"])


def record_image(store: Store, service: str, release: int, image: str, shim: bool) -> None:
    images = get_json(store, IMAGES_KEY, {})
    images.setdefault(service, {})[str(release)] = {"image": image, "shim": shim}
    set_json(store, IMAGES_KEY, images)


def load_progress(store: Store) -> dict[str, Progress]:
    raw = get_json(store, PROGRESS_KEY, {})
    return {k: Progress(v.get("phase"), v.get("target", ""), bool(v.get("retiring")),
                        bool(v.get("swapped")))
            for k, v in raw.items()}


def save_progress(store: Store, progress: dict[str, Progress]) -> None:
    set_json(store, PROGRESS_KEY, {k: asdict(v) for k, v in progress.items()})


def ensure_stable_ports(store: Store, services: dict[str, dict[str, Any]],
                        gateway_port: int, reserved: set[int] | None = None) -> dict[str, int]:
    """Allocate (once) the gateway's per-service ports and its metrics port, avoiding the
    gateway port and `reserved` (preview ports); a clash with a port allocated earlier is
    refused, since allocated ports never move."""
    wanted = [METRICS_KEY] + [f"{svc}/{p}" for svc, model in sorted(services.items())
                              for p in port_map(model)]
    taken = {gateway_port, *(reserved or set())}
    current: dict[str, int] = get_json(store, PORTS_KEY, {})
    clash = sorted(k for k, port in current.items() if port in taken)
    if clash:
        raise SwarmError(f"port {current[clash[0]]} is already the gateway's port for "
                         f"{clash[0]}; choose another gateway or preview port")
    ports = allocate_ports(current, wanted, taken)
    set_json(store, PORTS_KEY, ports)
    return ports


#: job -> its current run: {"release", "run" (a deploy after a failed run raises it, so
#: the job's Swarm service is made anew), "since" (when the controller created it), and,
#: once the controller stopped it at `jobs.*.timeout`, "timed_out" (the message) and
#: "logs" (its last lines, read before the service was removed)}
JOBS_KEY = "swarm.jobs"


def job_runs(store: Store) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = get_json(store, JOBS_KEY, {})
    return runs


def current_runs(store: Store) -> dict[str, int]:
    return {job: int(run.get("run", 0)) for job, run in job_runs(store).items()}


def rerun_jobs(store: Store, failed: set[str]) -> None:
    """A deploy runs again each job in `failed` (a run of its release failed or timed
    out): a new run number, so the controller replaces its Swarm service."""
    runs = job_runs(store)
    for job in failed:
        old = runs.get(job) or {}
        runs[job] = {"release": old.get("release"), "run": int(old.get("run", 0)) + 1}
    set_json(store, JOBS_KEY, runs)
