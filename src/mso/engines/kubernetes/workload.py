"""What one Deployment (or Job) runs: a release of a service, resolved for Kubernetes.

A `Workload` is built from a release spec (the same dict `mso.releases.apply` stores),
so the same builder renders the manifest as written (`mso render`) and any stored
release (`mso deploy`, rollbacks, canaries).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mso.releases.ports import port_map
from mso.releases.apply import release_spec
from mso.engines.kubernetes import naming
from mso.spec.load import LoadedManifest


@dataclass(frozen=True)
class Dependency:
    """A service this workload depends on, reached through its stable Service."""

    service: str
    protocol: str
    port: int


@dataclass(frozen=True)
class Workload:
    app: str
    service: str
    kind: str  # "service" | "job"
    release: int
    spec_hash: str
    spec: dict[str, Any] = field(repr=False)
    secrets: dict[str, str] = field(repr=False)
    image: str
    pull_policy: str
    replicas: int = 1
    subset: str = "stable"
    workdir: str | None = None
    dependencies: tuple[Dependency, ...] = ()
    bridge_image: str | None = None

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.spec["model"])

    @property
    def ports(self) -> dict[str, tuple[str, int]]:
        return port_map(self.model)

    def configs(self) -> list[tuple[str, bytes]]:
        return [(item["target"], base64.b64decode(item["content_b64"]))
                for item in self.spec.get("configs") or []]


def container_workdir(spec: dict[str, Any], base_dir: Path, own_image: bool) -> str | None:
    """Where `cwd` is inside an mso-built image (the manifest folder is /app)."""
    if not own_image:
        return None
    rel = os.path.relpath(spec.get("cwd") or str(base_dir), str(base_dir))
    return naming.APP_DIR if rel == "." else f"{naming.APP_DIR}/{rel}"


def dependencies(model: dict[str, Any], models: dict[str, dict[str, Any]]) -> tuple[Dependency, ...]:
    """Stable addresses of the services `model` depends on: first http port, else first port."""
    found: list[Dependency] = []
    for dep in model.get("depends_on") or {}:
        if dep not in models:
            continue  # a job: nothing to reach
        named = port_map(models[dep])
        chosen = next((n for n, (p, _) in named.items() if p == "http"), None) or next(iter(named), None)
        if chosen is not None:
            found.append(Dependency(dep, named[chosen][0], named[chosen][1]))
    return tuple(found)


def from_manifest(loaded: LoadedManifest, name: str, release: int, app_image: str,
                  bridge_image: str | None) -> Workload:
    """The workload of `name` exactly as the manifest says (for render and first deploys)."""
    manifest = loaded.manifest
    kind = "service" if name in manifest.services else "job"
    spec = release_spec(loaded, name, kind)
    item = manifest.runnable(name)
    own = item.image is None
    models = {n: s.model_dump(mode="json") for n, s in manifest.services.items()}
    secrets = {k: v.decode("utf-8", "surrogateescape") for k, v in loaded.secrets(name).items()}
    return Workload(
        app=manifest.app, service=name, kind=kind, release=release,
        spec_hash=loaded.spec_hash(name), spec=spec, secrets=secrets,
        image=item.image or app_image, pull_policy="Never" if own else "IfNotPresent",
        replicas=manifest.services[name].replicas if kind == "service" else 1,
        workdir=container_workdir(spec, loaded.base_dir, own),
        dependencies=dependencies(spec["model"], models), bridge_image=bridge_image)
