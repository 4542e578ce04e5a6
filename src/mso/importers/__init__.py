"""`mso import`: other formats (a Compose file, a Procfile) as an mso manifest.

`import_file(path)` translates and reports (`Imported`); `load_app(path)` is how every
command reads "the manifest": an mso.yaml as ever, or a compose file or Procfile imported
in memory (`mso up compose.yaml`), with errors that name the source file's lines.
This package sits just above `mso.spec` in the import contract: the daemon and its API
load apps through it, so an imported app is re-read on `mso deploy` like any manifest.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mso.importers.compose import COMPOSE_NAMES, import_compose
from mso.importers.procfile import import_procfile, is_procfile
from mso.importers.project import PROJECT_FILES, import_package_json, import_pyproject
from mso.importers.report import Entry, Report
from mso.importers.result import Imported
from mso.spec.errors import ManifestError
from mso.spec.load import LoadedManifest, load_data, load_manifest

__all__ = ["Entry", "Imported", "Report", "import_file", "init_folder", "is_importable", "load_app",
           "load_imported", "tailor"]

# What `mso init` reads, best first: files that say how to run the app, then files that
# only describe a project (guessed from).
INIT_SOURCES = (*COMPOSE_NAMES, "Procfile", *PROJECT_FILES)

_TOP_KEY = re.compile(r"^(app|services)\s*:", re.M)


def is_importable(path: Path) -> bool:
    """A compose file or a Procfile rather than an mso manifest: by name, or a YAML file
    with `services:` and no `app:` at the top (every mso manifest has `app:`)."""
    name = path.name
    if is_procfile(path) or name in COMPOSE_NAMES:
        return True
    if re.fullmatch(r"(docker-)?compose\..+\.ya?ml|.+\.compose\.ya?ml", name):
        return True
    if path.suffix not in (".yaml", ".yml") or name == "mso.yaml":
        return False
    try:
        head = path.read_text(errors="replace")[:200_000]
    except OSError:
        return False
    keys = set(_TOP_KEY.findall(head))
    return "services" in keys and "app" not in keys


def import_file(path: Path, environ: Mapping[str, str] | None = None, *,
                out_dir: Path | None = None, profiles: tuple[str, ...] = ()) -> Imported:
    """Translate a compose file or Procfile; raises ManifestError (file:line) when it is
    invalid. `out_dir`: where the manifest will be written (paths are relative to it)."""
    env = dict(os.environ if environ is None else environ)
    try:
        if is_procfile(path):
            return import_procfile(path, out_dir=out_dir)
        return import_compose(path, env, out_dir=out_dir, profiles=profiles)
    except ManifestError:
        raise
    except RecursionError:
        raise ManifestError(str(path), None, "", "the document is nested too deeply") from None
    except Exception as exc:  # never a traceback: anything unforeseen names the file
        raise ManifestError(str(path), None, "", f"cannot import: {type(exc).__name__}: {exc}") from exc


def init_folder(folder: Path, environ: Mapping[str, str] | None = None) -> Imported:
    """`mso init`: the app in `folder`, from the first of INIT_SOURCES it holds (a compose
    file or Procfile through `import_file`, pyproject.toml/package.json guessed from).
    Raises ManifestError when the folder holds none of them or the file is invalid."""
    for name in INIT_SOURCES:
        path = folder / name
        if not path.is_file():
            continue
        if name == "pyproject.toml":
            return _guarded(path, import_pyproject)
        if name == "package.json":
            return _guarded(path, import_package_json)
        return import_file(path, environ, out_dir=folder)
    raise ManifestError(str(folder), None, "", "nothing to start from: mso init reads a "
                        + ", ".join(INIT_SOURCES[:-2]) + ", " + " or ".join(INIT_SOURCES[-2:])
                        + "; for a new service, use `mso new service NAME`")


def _guarded(path: Path, guess: Any) -> Imported:
    try:
        imported: Imported = guess(path)
        return imported
    except ManifestError:
        raise
    except Exception as exc:  # never a traceback: anything unforeseen names the file
        raise ManifestError(str(path), None, "", f"cannot read: {type(exc).__name__}: {exc}") from exc


def load_imported(imported: Imported, environ: Mapping[str, str] | None = None, *,
                  check_files: bool = True) -> LoadedManifest:
    """The imported app as a loaded manifest (in memory; nothing is written)."""
    env = dict(os.environ if environ is None else environ)
    return load_data(imported.data, imported.lines, imported.display, imported.source,
                     env, check_files=check_files, interpolate=False)


def load_app(path: str | Path, environ: Mapping[str, str] | None = None, *,
             check_files: bool = True, profiles: tuple[str, ...] = ()) -> LoadedManifest:
    """`load_manifest`, or for a compose file/Procfile its import, loaded in memory."""
    source = Path(path)
    if not is_importable(source):
        return load_manifest(path, environ, check_files=check_files)
    return load_imported(import_file(source, environ, profiles=profiles), environ,
                         check_files=check_files)


def tailor(imported: Imported, engine: str, environ: Mapping[str, str] | None = None) -> None:
    """Fit the import to one engine: drop (and report, with the engine's reason) every key
    that engine would refuse (mso.spec.support), and write `engine:`. The manifest then
    passes `mso validate` there; on another engine it may mean less."""
    from mso.spec import support
    if engine not in support.ENGINES:
        raise ValueError(f"unknown engine {engine!r}")
    loaded = load_imported(imported, environ, check_files=False)
    for feature in support.FEATURES:
        gap = feature.gaps.get(engine)
        if gap is None:
            continue
        for path in support.uses(loaded.data, feature):
            if _remove(imported.data, path):
                imported.report.add(imported.display, imported.lines.line_of(path),
                                    ".".join(map(str, path)), "dropped", None,
                                    f"not supported on {engine}: {gap.why}; {gap.instead}")
    if engine != "local":
        imported.data = {"app": imported.data["app"], "engine": engine,
                         **{k: v for k, v in imported.data.items() if k != "app"}}


def _remove(data: Any, path: tuple[str | int, ...]) -> bool:
    """Delete `path` from nested dicts, and parents it leaves empty; False if absent."""
    parents: list[tuple[Any, str | int]] = []
    node = data
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        parents.append((node, part))
        node = node[part]
    if not isinstance(node, dict) or path[-1] not in node:
        return False
    del node[path[-1]]
    while parents and not node:
        parent, key = parents.pop()
        del parent[key]
        node = parent
    return True
