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
    #: The manifest was not rolled out: it matches a release that was rolled back (or
    #: replaced by `mso rollback`); `--force` rolls it out again.
    held: bool = False


@dataclass(frozen=True)
class Drift:
    """A service whose manifest differs from the release it runs."""

    service: str
    running: int
    changed: tuple[str, ...]
    #: The kept release the manifest is identical to, if any (e.g. a rolled-back one).
    matches: int | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "running": self.running,
                "changed": list(self.changed), "matches": self.matches, "note": self.note}


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


NOT_A_RELEASE = ("replicas", "autoscale", "rollout", "watch")
MAX_KEYS = 8


def spec_changes(old: dict[str, Any], new: dict[str, Any],
                 old_secrets: dict[str, str] | None = None,
                 new_secrets: dict[str, str] | None = None) -> list[str]:
    """The keys that differ between two release specs, as dotted manifest paths
    (`run`, `env.GREETING`, `config.conf/web.toml`, `secrets.api_key`): names only,
    never values. Keys that do not make a release (replicas, autoscale, rollout, watch) are
    left out."""
    keys: list[str] = []
    _diff(_without(old.get("model") or {}), _without(new.get("model") or {}), "", keys)
    old_env, new_env = old.get("env") or {}, new.get("env") or {}
    keys += [f"env.{k}" for k in sorted(set(old_env) | set(new_env))
             if old_env.get(k) != new_env.get(k)]
    old_cfg = {c["target"]: c["content_b64"] for c in old.get("configs") or []}
    new_cfg = {c["target"]: c["content_b64"] for c in new.get("configs") or []}
    keys += [f"config.{t}" for t in sorted(set(old_cfg) | set(new_cfg))
             if old_cfg.get(t) != new_cfg.get(t)]
    if old.get("cwd") != new.get("cwd"):
        keys.append("cwd")
    if old_secrets is not None and new_secrets is not None:
        keys += [f"secrets.{k}" for k in sorted(set(old_secrets) | set(new_secrets))
                 if old_secrets.get(k) != new_secrets.get(k)]
    return list(dict.fromkeys(keys))


def _without(model: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in model.items() if k not in NOT_A_RELEASE}


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key), out)
        return
    out.append(path or "spec")


def _keys_text(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS])
    return shown + (f" and {len(keys) - MAX_KEYS} more" if len(keys) > MAX_KEYS else "")


def _describe_change(previous: Release | None, spec: dict[str, Any],
                     old_secrets: dict[str, str] | None = None,
                     new_secrets: dict[str, str] | None = None) -> str:
    if previous is None:
        return "initial release"
    keys = spec_changes(previous.spec, spec, old_secrets, new_secrets)
    return "changed: " + (_keys_text(keys) if keys else "secrets")


def _turned_down(store: Store, service: str, spec_hash: str,
                 running: int | None) -> tuple[Release, str] | None:
    """A kept release with this spec hash that was rolled back, failed, or undone by
    `mso rollback` (and is not what runs now), with how it ended. Deploying it again
    takes `--force`: otherwise the same manifest would undo that decision silently."""
    releases = store.releases(service)
    for rel in reversed(releases):
        if rel.spec_hash != spec_hash:
            continue
        if rel.number == running:
            return None
        if rel.outcome in ("rolled back", "failed"):
            return rel, "was rolled back" if rel.outcome == "rolled back" else "failed"
        later = [r for r in releases if r.number > rel.number
                 and r.change.startswith("rollback to release")]
        if later:
            return rel, f"was replaced by `mso rollback` (release {later[0].number})"
        return None
    return None


def apply_manifest(store: Store, loaded: LoadedManifest, author: str | None = None,
                   force: bool = False) -> list[AppliedChange]:
    """Record new releases for changed services and jobs, and update desired state.

    A manifest identical to a release that was rolled back, failed, or was undone by
    `mso rollback` is held (not rolled out, said in the change) unless `force`; with
    `force` it becomes a new release again.
    """
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
        before = current.get(name)
        # Only for what runs now: a fresh start (after `mso down`) runs the manifest.
        turned_down = _turned_down(store, name, spec_hash, before.release) \
            if before is not None else None
        held = turned_down is not None and not force
        if held and turned_down is not None and before is not None:
            rel, how = turned_down
            running = before.release
            number, created = running, False
            change = (f"not rolled out: the manifest is release {rel.number}, which {how}; "
                      f"release {running} keeps running (`mso deploy --force` rolls it out "
                      "again)")
        elif latest is not None and latest.spec_hash == spec_hash and turned_down is None:
            number, created, change = latest.number, False, "unchanged"
        else:
            spec = release_spec(loaded, name, kind)
            secrets = {k: v.decode("utf-8", "surrogateescape")
                       for k, v in loaded.secrets(name).items()}
            change = _describe_change(latest, spec,
                                      store.release_secrets(name, latest.number)
                                      if latest else None, secrets)
            if turned_down is not None:
                change = f"redeploy of release {turned_down[0].number} with --force"
            rel = store.add_release(name, spec_hash, spec, secrets, who, change)
            number, created = rel.number, True
        desired_replicas = replicas
        if before is not None and before.manifest_replicas == replicas:
            desired_replicas = before.replicas  # keep `mso scale` until the manifest changes it
        # An unchanged spec keeps whatever release is desired now: after a rollback, applying
        # the same manifest again must not roll the bad release out a second time.
        release = number if created or before is None else before.release
        store.set_desired(Desired(name, kind, release, desired_replicas, replicas))
        changes.append(AppliedChange(name, number, created, change, held))
    for name in set(current) - {e[0] for e in entries}:
        store.delete_desired(name)
        changes.append(AppliedChange(name, 0, False, "removed from the manifest"))
    return changes


def drift(store: Store, loaded: LoadedManifest) -> list[Drift]:
    """Services whose manifest differs from the release they run (which keys), read-only."""
    found: list[Drift] = []
    desired = store.desired()
    for name in [*loaded.manifest.services, *loaded.manifest.jobs]:
        want = desired.get(name)
        if want is None:
            continue
        running = store.release(name, want.release)
        spec_hash = loaded.spec_hash(name)
        if running is None or running.spec_hash == spec_hash:
            continue
        kind = "service" if name in loaded.manifest.services else "job"
        spec = release_spec(loaded, name, kind)
        secrets = {k: v.decode("utf-8", "surrogateescape")
                   for k, v in loaded.secrets(name).items()}
        keys = spec_changes(running.spec, spec, store.release_secrets(name, running.number),
                            secrets)
        match = next((r for r in reversed(store.releases(name))
                      if r.spec_hash == spec_hash), None)
        turned_down = _turned_down(store, name, spec_hash, want.release)
        note = (f"the manifest is release {turned_down[0].number}, which {turned_down[1]}; "
                "`mso deploy --force` rolls it out again") if turned_down else \
            "`mso deploy` rolls it out"
        found.append(Drift(name, running.number, tuple(keys) or ("secrets",),
                           match.number if match else None, note))
    return found


def whoami() -> str:
    """The release author when none is given: the OS user."""
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
