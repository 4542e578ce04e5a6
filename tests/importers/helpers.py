"""Helpers of the importer tests: import a compose text, round-trip the manifest."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from mso.importers import Entry, Imported, import_file, load_imported
from mso.spec import support
from mso.spec.load import LoadedManifest, load_manifest


def compose(folder: Path, text: str, name: str = "compose.yaml",
            env: dict[str, str] | None = None, **kw: Any) -> Imported:
    (folder / name).write_text(textwrap.dedent(text))
    return import_file(folder / name, env or {}, **kw)


def round_trip(imported: Imported, folder: Path, engines: tuple[str, ...] = ("local",),
               check_files: bool = False) -> LoadedManifest:
    """Write mso.yaml beside the source, load it as `mso validate` does (and check the
    engines' support table); the in-memory load must give the very same manifest."""
    target = folder / "mso.yaml"
    target.write_text(imported.yaml_text())
    written = load_manifest(target, {}, check_files=check_files)
    for engine in engines:
        support.check(written, engine)  # type: ignore[arg-type]
    in_memory = load_imported(imported, {}, check_files=check_files)
    assert in_memory.manifest == written.manifest
    return written


def entry(imported: Imported, key: str, status: str | None = None) -> Entry:
    found = [e for e in imported.report.entries if e.key == key
             and (status is None or e.status == status)]
    assert found, f"no report entry for {key} ({status}): " + "\n".join(imported.report.lines())
    return found[0]


def line_of(text: str, marker: str = "# <-") -> int:
    """1-based line of the marker in a dedented compose text."""
    for number, line in enumerate(textwrap.dedent(text).splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"no {marker!r} in the text")
