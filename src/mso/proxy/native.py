"""Which build of the per-request modules runs: mypyc-compiled or plain Python.

`setup.py` compiles the hot modules (HOT below) with mypyc, next to their sources, and
records the sha256 of each source it compiled (`native_build.json`).  A compiled module
whose source no longer has that hash is stale (the source was edited or pulled since the
build) and would silently run old code, so in that case, or when MSO_PROXY_PURE=1, every
hot module is loaded from source instead.  Hashes, not mtimes: a wheel's files all get
the time they were unpacked, so a fresh `pip install .` looked stale by mtime.  A build
without the record (older setup.py) is judged by mtime as before.  It is all or none:
compiled code checks the classes of what it is handed, and a compiled Exchange given a
pure-Python ClientConnection would fail.
"""
from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Mapping, Sequence

HOT = ("accesslog", "balancer", "exchange", "http_server", "metrics", "response_head",
       "safety", "tcp", "upstream")
PACKAGE = "mso.proxy"
_HERE = Path(__file__).resolve().parent


def compiled_files(folder: Path = _HERE) -> dict[str, Path]:
    """Compiled extension of each hot module that has one."""
    out = {}
    for name in HOT:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"{name}{suffix}"
            if path.exists():
                out[name] = path
                break
    return out


BUILD_RECORD = "native_build.json"


def _recorded_hashes(folder: Path) -> dict[str, str] | None:
    try:
        data = json.loads((folder / BUILD_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None


def stale_modules(compiled: dict[str, Path], folder: Path = _HERE) -> list[str]:
    """Hot modules whose source changed after they were compiled (or never were)."""
    recorded = _recorded_hashes(folder)
    stale = []
    for name in HOT:
        so = compiled.get(name)
        source = folder / f"{name}.py"
        if so is None:
            stale.append(name)
        elif recorded is not None:
            if recorded.get(name) != hashlib.sha256(source.read_bytes()).hexdigest():
                stale.append(name)
        elif so.stat().st_mtime < source.stat().st_mtime:
            stale.append(name)
    return stale


def choose(environ: Mapping[str, str] = os.environ, folder: Path = _HERE,
           compiled: dict[str, Path] | None = None) -> tuple[bool, str]:
    """(use the compiled build?, why) — decided before any hot module is imported."""
    if compiled is None:
        compiled = compiled_files(folder)
    if not compiled:
        return False, "not compiled (pip install -e . compiles it when a C compiler is present)"
    if environ.get("MSO_PROXY_PURE") == "1":
        return False, "MSO_PROXY_PURE=1"
    stale = stale_modules(compiled, folder)
    if stale:
        return False, (f"compiled build is stale for {', '.join(stale)}: "
                       "reinstall mso (`pip install -e .` in a clone) to rebuild it")
    return True, "compiled with mypyc"


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Loads the hot modules from their .py files even where a compiled one exists."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != PACKAGE or name not in HOT:
            return None
        source = str(_HERE / f"{name}.py")
        loader = importlib.machinery.SourceFileLoader(fullname, source)
        return importlib.util.spec_from_file_location(fullname, source, loader=loader)


_FOUND = compiled_files()
COMPILED, REASON = choose(compiled=_FOUND)
#: A build exists but is not used (stale or MSO_PROXY_PURE=1): worth a warning at start-up.
BUILD_SKIPPED = bool(_FOUND) and not COMPILED
if BUILD_SKIPPED and not any(isinstance(f, _SourceFirst) for f in sys.meta_path):
    sys.meta_path.insert(0, _SourceFirst())
