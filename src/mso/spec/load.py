"""Load a manifest: read → parse YAML (with lines) → interpolate → validate → LoadedManifest.

`load_manifest` raises only `ManifestError` (file not found, bad encoding, YAML syntax,
validation, missing referenced files...), each naming file, line and field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from mso.spec.errors import ManifestError
from mso.spec.interpolate import interpolate_tree
from mso.spec.loaded import LoadedManifest
from mso.spec.models import Manifest
from mso.spec.translate import translate
from mso.spec.yaml_loader import LineMap, load_yaml

__all__ = ["LoadedManifest", "load_data", "load_manifest"]


def load_manifest(
    path: str | Path, environ: Mapping[str, str] | None = None, *, check_files: bool = True
) -> LoadedManifest:
    """Load and validate `path`, interpolating from `environ` (default: os.environ).

    With `check_files` (the default) every referenced env file, secret, config source
    and cwd must exist, so `mso validate` and `mso up` fail early; commands that only
    need names (`mso down`, `mso ps`) may pass False.
    """
    file = str(path)
    env = MappingProxyType(dict(os.environ if environ is None else environ))
    try:
        return _load(file, env, check_files)
    except ManifestError:
        raise
    except RecursionError:
        raise ManifestError(file, None, "", "the document is nested too deeply") from None
    except Exception as exc:  # translate anything unforeseen at the boundary, never a traceback
        raise ManifestError(file, None, "", f"cannot load manifest: {type(exc).__name__}: {exc}") from exc


def load_data(data: dict[str, Any], lines: LineMap, file: str, path: str | Path,
              environ: Mapping[str, str], *, check_files: bool = True,
              interpolate: bool = True) -> LoadedManifest:
    """Validate manifest data that did not come from an mso.yaml (`mso import` makes it
    in memory from a compose file): `lines` maps its keys to lines of `file`, and paths
    are relative to `path`'s folder. `interpolate=False` when its strings are final."""
    absolute = Path(os.path.abspath(path))
    env = MappingProxyType(dict(environ))
    try:
        return _validate(data, lines, file, absolute, env, check_files, interpolate)
    except ManifestError:
        raise
    except Exception as exc:  # never a traceback
        raise ManifestError(file, None, "", f"cannot load manifest: {type(exc).__name__}: {exc}") from exc


def _load(file: str, env: Mapping[str, str], check_files: bool) -> LoadedManifest:
    absolute = Path(os.path.abspath(file))
    text = _read_text(file, absolute)
    data, lines = load_yaml(text, file)
    if not isinstance(data, dict):
        raise ManifestError(
            file, lines.line_of(()), "", f"the top level must be a mapping (app:, services:, ...), got {_kind(data)}"
        )
    return _validate(data, lines, file, absolute, env, check_files, True)


def _validate(data: dict[str, Any], lines: LineMap, file: str, absolute: Path,
              env: Mapping[str, str], check_files: bool, interpolate: bool) -> LoadedManifest:
    if interpolate:
        data = interpolate_tree(data, env, file, lines)
    try:
        manifest = Manifest.model_validate(data, context={"base_dir": str(absolute.parent)})
    except ValidationError as exc:
        raise translate(exc, data, file, lines, Manifest) from None
    loaded = LoadedManifest(
        manifest=manifest,
        path=absolute,
        base_dir=absolute.parent,
        environ=env,
        file=file,
        data=data,
        lines=lines,
    )
    if check_files:
        loaded.check_files()
    return loaded


def _read_text(file: str, absolute: Path) -> str:
    try:
        raw = absolute.read_bytes()
    except FileNotFoundError:
        raise ManifestError(file, None, "", "file not found (create it, or point at one with -f FILE)") from None
    except IsADirectoryError:
        raise ManifestError(file, None, "", "is a directory, not a manifest file") from None
    except PermissionError:
        raise ManifestError(file, None, "", "permission denied") from None
    except OSError as exc:
        raise ManifestError(file, None, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ManifestError(file, line, "", "not valid UTF-8 text") from None
    if not text.strip():
        raise ManifestError(file, None, "", "the file is empty; it needs at least `app:` and `services:`")
    return text


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"

