"""A `run:` service's code: the files a release of it runs, and their content digest.

On Swarm and Kubernetes a code change with an unchanged manifest is a new release because
the code travels in an image (mso.releases.images). On the embedded engine a `run:`
service runs the files on disk, so without more a changed file would be no release at all:
`mso deploy` would answer "unchanged", and a canary could never judge new code on the
laptop as it does in production. So the embedded engine digests each `run:` service's
source files at every `mso up`/`deploy` and hands the digest to the same
`record_builds` as an image tag: new code is a new numbered release, rolled out with the
service's strategy (a canary stays a canary: the old replicas keep the code they loaded).

Which files are a service's code (decided here, documented in docs/manifest.md):

* its `watch:` paths, minus their `ignore` globs, when it has `watch:` (the developer
  already said which files are its code: a change to another service's module then gives
  no release to this one);
* else its `cwd` (default: the manifest's folder).

Never counted: mso's state and VCS/cache folders and editor files (the rules `mso up
--watch` ignores, defined here for both), the manifest itself and the files mso delivers
apart from the code (secrets, `env_file`, `config:` sources, `.env`): the spec hash covers
what of them is meant to change a release, and a rotated secret must not read as new code.

What it is not: a snapshot. The laptop holds one copy of the code, so a rollback to an
older release restarts the replicas on the files as they are now (docs/manifest.md).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from mso.spec.load import LoadedManifest

#: Digests are `src:` and this many hex digits: short in `mso releases`, and a release's
#: change reads "new code src:3f2a...".
DIGEST_LENGTH = 16

#: Always ignored folders (anywhere under a watched path) and file names.
IGNORED_DIRS = frozenset({".mso", ".git", ".hg", ".svn", "__pycache__", ".mypy_cache",
                          ".pytest_cache", ".hypothesis", ".tox", ".venv", ".idea",
                          "node_modules"})
IGNORED_FILES = ("*.py[cod]", "*.sw?", "*~", ".#*", "#*#", "4913", "*.kate-swp",
                 "*.crswap", ".___jb_*___", "*___jb_old___", "*___jb_tmp___", ".DS_Store")


@dataclass(frozen=True)
class WatchRule:
    """One service's `watch:`, with its paths made absolute."""

    service: str
    roots: tuple[Path, ...]
    ignore: tuple[str, ...] = ()
    action: str = "restart"  # restart | recreate | signal
    signal: str | None = None
    base: Path | None = None  # the manifest's folder, for globs written as paths




def is_ignored(rule: WatchRule, root: Path, path: Path) -> bool:
    """Whether a change to `path` (under `root`, one of the rule's roots) does not count.

    A glob ending in `/` names a folder anywhere below the root (`data/`); a glob with a
    `/` inside matches the path relative to the root (`tests/*.py`); any other glob
    matches a file or folder name anywhere (`*.log`). A glob with a `/` may also be written
    relative to the manifest's folder (`src/gen/*.py` while watching `src/`)."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return True
    parts = rel.parts if rel.parts else (path.name,)
    if any(part in IGNORED_DIRS for part in parts[:-1]) or parts[-1] in IGNORED_DIRS:
        return True
    if any(fnmatch.fnmatchcase(parts[-1], glob) for glob in IGNORED_FILES):
        return True
    texts = [rel.as_posix()]
    if rule.base is not None and rule.base in path.parents:
        texts.append(path.relative_to(rule.base).as_posix())
    for glob in rule.ignore:
        if glob.endswith("/"):
            name = glob.rstrip("/")
            if "/" in name:
                if any(fnmatch.fnmatchcase(t, f"{name}/*") or fnmatch.fnmatchcase(t, name)
                       for t in texts):
                    return True
            elif any(fnmatch.fnmatchcase(part, name) for part in parts):
                return True  # the folder itself, or anything in it
        elif "/" in glob.strip("/"):
            if any(fnmatch.fnmatchcase(t, glob.lstrip("/")) for t in texts):
                return True
        elif any(fnmatch.fnmatchcase(part, glob) for part in parts):
            return True
    return False


def watched_roots(loaded: LoadedManifest, service: str) -> list[tuple[str, Path]]:
    """A service's watched paths as written (the `watch` default: its cwd, else the
    manifest's folder) and made absolute."""
    item = loaded.manifest.services[service]
    written = (list(item.watch.paths) if item.watch is not None else []) or [item.cwd or "."]
    return [(rel, (loaded.base_dir / rel).resolve()) for rel in written]


def private_files(loaded: LoadedManifest) -> set[Path]:
    """The manifest, secret, config and env files: delivered by mso, never code (and
    never baked into an image)."""
    out: set[Path] = {loaded.path.resolve()}
    for item in [*loaded.manifest.services.values(), *loaded.manifest.jobs.values()]:
        for secret in item.secrets.values():
            if secret.file:
                out.add((loaded.base_dir / secret.file).resolve())
        out.update((loaded.base_dir / f).resolve() for f in item.env_file)
        for cfg in getattr(item, "config", []):
            out.add((loaded.base_dir / cfg.source).resolve())
    return out


def _files(rule: WatchRule, skip: set[Path]) -> list[Path]:
    out: list[Path] = []
    for root in rule.roots:
        if root.is_file():
            if root not in skip:
                out.append(root)
            continue
        for folder, dirs, names in os.walk(root):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not is_ignored(rule, root, here / d / "x"))
            for name in sorted(names):
                path = here / name
                if path.resolve() not in skip and path.is_file() \
                        and not is_ignored(rule, root, path):
                    out.append(path)
    return out


def source_digest(loaded: LoadedManifest, service: str) -> str:
    """`src:<digest>` of the service's code (see the module docstring)."""
    item = loaded.manifest.services[service]
    base = loaded.base_dir.resolve()
    rule = WatchRule(service, tuple(p for _, p in watched_roots(loaded, service)),
                     tuple(item.watch.ignore) if item.watch is not None else (), base=base)
    h = hashlib.sha256()
    # `.env` feeds the manifest's interpolation: the spec hash covers what it changes
    skip = private_files(loaded) | {(base / ".env").resolve()}
    for path in sorted(set(_files(rule, skip))):
        try:
            data = path.read_bytes()
        except OSError:  # removed or unreadable while we walk: not code we can ship
            continue
        name = path.relative_to(base).as_posix() if base in path.parents else str(path)
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return "src:" + h.hexdigest()[:DIGEST_LENGTH]


def source_digests(loaded: LoadedManifest) -> dict[str, str]:
    """The digest of every `run:` service (containers have their image instead; jobs
    run once per spec and are not rolled out)."""
    return {name: source_digest(loaded, name)
            for name, item in loaded.manifest.services.items() if item.run is not None}
