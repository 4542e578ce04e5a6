"""What a replica gets: its environment, its secret files and its config files.

Replicas inherit only a small, safe part of the daemon's environment (PATH, locale, home)
rather than all of it: mso's own environment often holds the very secrets that the
manifest hands to one service, and they must not leak into every other one.

A service with `user:` runs as another user, who cannot enter `.mso/` (0700: it holds
the state database with the secret values and the API token). Opening `.mso/` to it
(0711, or an ACL) would leave every file directly in it one wrong mode away from that
user, and the path above `.mso/` (a home folder is 0700 on Debian) is not mso's to
open. So such a replica's folders live where mso owns every path component, in
per-app folders (`KEY`: a hash of the state folder) that others may traverse but not
list (0711, root's), each leaf owned by the service's user, like systemd's
StateDirectory= and credentials:

- data: `/var/lib/mso/KEY/data/SERVICE` (0700, kept across restarts and `mso down`; a
  service that gains `user:` has its `.mso/data/SERVICE` moved there once);
- secrets: `/run/mso/KEY/secrets/REPLICA` (0500, files 0400), removed with the replica;
- config: `/run/mso/KEY/config/SERVICE/RELEASE-UID` (0500, files 0400), a copy of the
  release's files in `.mso/config/`; `/run/mso/KEY` is removed at `mso down`.

A container's folders are bind-mounted by dockerd (root), so no path to them needs
opening: they stay in `.mso/` (`mounted`), only the folders themselves (and the files in
them) handed to the container's uid.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mso.engines.local.users import RunAs, hand_over
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


#: Where the folders of replicas that run as another user live (see the docstring).
DATA_ROOT = Path("/var/lib/mso")
RUN_ROOT = Path("/run/mso")


def app_key(paths: StatePaths) -> str:
    return hashlib.sha256(str(paths.state_dir).encode()).hexdigest()[:16]


def _traversable(root: Path, *parts: str) -> Path:
    """root/parts..., each made and left 0711 (enter by name, no listing)."""
    folder = root
    for part in ("", *parts):
        folder = folder / part if part else folder
        folder.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(folder, 0o711)
    return folder


def data_folder(paths: StatePaths, service: str, who: RunAs | None,
                mounted: bool = False) -> Path:
    """The service's data folder (MSO_DATA_DIR), owned by `who` when given. `mounted`:
    a container's, which dockerd bind-mounts (only the folder itself must be the user's,
    so it stays in `.mso/`)."""
    if who is None or mounted:
        folder = paths.data_dir / service
        folder.mkdir(parents=True, exist_ok=True)
        if who is not None:
            hand_over(folder, who, 0o700)
        return folder
    folder = _traversable(DATA_ROOT, app_key(paths), "data") / service
    old = paths.data_dir / service
    if not folder.exists() and old.is_dir() and any(old.iterdir()):
        shutil.move(str(old), str(folder))
    folder.mkdir(mode=0o700, exist_ok=True)
    hand_over(folder, who, 0o700)
    return folder


def write_secret_files(paths: StatePaths, owner: str, secrets: dict[str, str],
                       who: RunAs | None = None, mounted: bool = False) -> Path:
    """Write secrets as mode-0400 files in a private folder and return the folder
    (owned by `who` when given, outside `.mso/` unless `mounted` into a container)."""
    folder = _secret_folder(paths, owner, None if mounted else who)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, parents=True)
    for name, value in secrets.items():
        target = folder / name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(value)
        if who is not None:
            hand_over(target, who, 0o400)
    if who is not None:
        hand_over(folder, who, 0o500)
    return folder


def _secret_folder(paths: StatePaths, owner: str, who: RunAs | None) -> Path:
    if who is None:
        return paths.secrets_dir / owner
    return _traversable(RUN_ROOT, app_key(paths), "secrets") / owner


def remove_secret_files(paths: StatePaths, owner: str) -> None:
    shutil.rmtree(paths.secrets_dir / owner, ignore_errors=True)
    shutil.rmtree(RUN_ROOT / app_key(paths) / "secrets" / owner, ignore_errors=True)


def remove_run_folders(paths: StatePaths) -> None:
    """`mso down`: the secret and config copies of replicas that ran as other users."""
    shutil.rmtree(RUN_ROOT / app_key(paths), ignore_errors=True)


def write_config_files(paths: StatePaths, service: str, release: int,
                       configs: list[dict[str, Any]], who: RunAs | None = None,
                       mounted: bool = False) -> Path:
    """Materialize a release's config files once; they are immutable like the release.
    With `who`: a read-only copy owned by that user, outside `.mso/` (unless `mounted`
    into a container)."""
    folder = paths.config_dir / service / str(release)
    for item in configs:
        target = folder / item["target"]
        target.parent.mkdir(parents=True, exist_ok=True)
        data = base64.b64decode(item["content_b64"])
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    if who is None:
        return folder
    where = paths.config_dir / service if mounted else \
        _traversable(RUN_ROOT, app_key(paths), "config", service)
    copy = where / f"{release}-{who.uid}"
    if not copy.exists():
        partial = copy.with_name(copy.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(folder, partial)
        for root, dirs, files in os.walk(partial, topdown=False):
            for name in files:
                hand_over(Path(root) / name, who, 0o400)
            for name in dirs:
                hand_over(Path(root) / name, who, 0o500)
        hand_over(partial, who, 0o500)
        partial.rename(copy)
    return copy


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
