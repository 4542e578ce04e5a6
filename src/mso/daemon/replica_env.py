"""What a replica gets: its environment, its secret files and its config files.

Replicas inherit only a small, safe part of the daemon's environment (PATH, locale, home)
rather than all of it: mso's own environment often holds the very secrets that the
manifest hands to one service, and they must not leak into every other one.
"""

from __future__ import annotations

import base64
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mso.paths import StatePaths
from mso.spec.service import secret_env_var

INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "USER", "LOGNAME",
             "SHELL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH", "SYSTEMROOT")


@dataclass(frozen=True)
class Discovery:
    """A service's stable address, as its dependents see it."""

    service: str
    host: str
    port: int
    protocol: str

    def env(self) -> dict[str, str]:
        key = self.service.upper().replace("-", "_")
        scheme = "http" if self.protocol == "http" else "tcp"
        return {f"{key}_URL": f"{scheme}://{self.host}:{self.port}",
                f"{key}_HOST": self.host, f"{key}_PORT": str(self.port)}


def base_environment(instance_id: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in INHERITED}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PYTHONUNBUFFERED"] = "1"  # logs are an event stream: don't hold lines in buffers
    env["MSO_INSTANCE"] = instance_id
    return env


def write_secret_files(paths: StatePaths, owner: str, secrets: dict[str, str]) -> Path:
    """Write secrets as mode-0400 files in a private folder and return the folder."""
    folder = paths.secrets_dir / owner
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, parents=True)
    for name, value in secrets.items():
        target = folder / name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(value)
    return folder


def remove_secret_files(paths: StatePaths, owner: str) -> None:
    shutil.rmtree(paths.secrets_dir / owner, ignore_errors=True)


def write_config_files(paths: StatePaths, service: str, release: int,
                       configs: list[dict[str, Any]]) -> Path:
    """Materialize a release's config files once; they are immutable like the release."""
    folder = paths.config_dir / service / str(release)
    for item in configs:
        target = folder / item["target"]
        target.parent.mkdir(parents=True, exist_ok=True)
        data = base64.b64decode(item["content_b64"])
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def replica_environment(*, base: dict[str, str], spec: dict[str, Any], app: str,
                        service: str, replica: str, release: int, ports: dict[str, int],
                        secrets: dict[str, str], secrets_dir: Path, config_dir: Path,
                        data_dir: Path, discovery: list[Discovery]) -> dict[str, str]:
    """The complete environment of one replica (or job run)."""
    env = dict(base)
    for dep in discovery:
        env.update(dep.env())
    env.update(spec["env"])
    model = spec["model"]
    for name, secret in (model.get("secrets") or {}).items():
        var = secret_env_var(name, secret.get("as_env"))
        if var is not None:
            env[var] = secrets.get(name, "")
    first = True
    for name, port in ports.items():
        if first:
            env["PORT"] = str(port)
            first = False
        env[f"PORT_{name.upper().replace('-', '_')}"] = str(port)
    env.update({"MSO_APP": app, "MSO_SERVICE": service, "MSO_REPLICA": replica,
                "MSO_RELEASE": str(release), "MSO_SECRETS": str(secrets_dir),
                "MSO_CONFIG_DIR": str(config_dir), "MSO_DATA_DIR": str(data_dir)})
    return env
