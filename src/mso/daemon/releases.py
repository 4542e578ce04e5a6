"""Turning a loaded manifest into immutable releases and desired state.

A release captures everything a replica needs to run that version again later, which is
what makes rollback to any kept release possible: the normalized service spec, its
resolved environment, its config file contents and (in a separate table, never shown)
its secrets. A spec hash equal to the latest release's makes no new release.
"""

from __future__ import annotations

import base64
import getpass
from dataclasses import dataclass
from typing import Any

from mso.spec.load import LoadedManifest
from mso.store.db import Store
from mso.store.records import Desired, Release


@dataclass(frozen=True)
class AppliedChange:
    service: str
    release: int
    created: bool
    change: str


def release_spec(loaded: LoadedManifest, name: str, kind: str) -> dict[str, Any]:
    """Everything needed to run `name` later, without secret values."""
    manifest = loaded.manifest
    model = manifest.services[name] if kind == "service" else manifest.jobs[name]
    cwd = loaded.base_dir / (model.cwd or ".")
    return {
        "kind": kind,
        "model": model.model_dump(mode="json"),
        "cwd": str(cwd.resolve()),
        "env": loaded.service_env(name),
        "configs": [{"target": target, "content_b64": base64.b64encode(data).decode()}
                    for target, data in loaded.configs(name)],
    }


def _describe_change(previous: Release | None, spec: dict[str, Any]) -> str:
    if previous is None:
        return "initial release"
    changed = []
    for key in ("model", "env", "configs", "cwd"):
        if previous.spec.get(key) != spec.get(key):
            changed.append({"model": "spec", "env": "env", "configs": "config",
                            "cwd": "cwd"}[key])
    return "changed: " + (", ".join(changed) if changed else "secrets")


def apply_manifest(store: Store, loaded: LoadedManifest,
                   author: str | None = None) -> list[AppliedChange]:
    """Record new releases for changed services and jobs, and update desired state."""
    who = author or whoami()
    manifest = loaded.manifest
    changes: list[AppliedChange] = []
    current = store.desired()
    entries: list[tuple[str, str, int]] = [(n, "service", s.replicas)
                                           for n, s in manifest.services.items()]
    entries += [(n, "job", 1) for n in manifest.jobs]
    for name, kind, replicas in entries:
        spec_hash = loaded.spec_hash(name)
        latest = store.latest_release(name)
        if latest is not None and latest.spec_hash == spec_hash:
            number, created, change = latest.number, False, "unchanged"
        else:
            spec = release_spec(loaded, name, kind)
            secrets = {k: v.decode("utf-8", "surrogateescape")
                       for k, v in loaded.secrets(name).items()}
            change = _describe_change(latest, spec)
            rel = store.add_release(name, spec_hash, spec, secrets, who, change)
            number, created = rel.number, True
        before = current.get(name)
        desired_replicas = replicas
        if before is not None and before.manifest_replicas == replicas:
            desired_replicas = before.replicas  # keep `mso scale` until the manifest changes it
        # An unchanged spec keeps whatever release is desired now: after a rollback, applying
        # the same manifest again must not roll the bad release out a second time.
        release = number if created or before is None else before.release
        store.set_desired(Desired(name, kind, release, desired_replicas, replicas))
        changes.append(AppliedChange(name, number, created, change))
    for name in set(current) - {e[0] for e in entries}:
        store.delete_desired(name)
        changes.append(AppliedChange(name, 0, False, "removed from the manifest"))
    return changes


def whoami() -> str:
    """The release author when none is given: the OS user."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
