"""A `run:` service's code digest (mso.releases.sources): what counts as its code."""

from __future__ import annotations

from pathlib import Path

from mso.releases.sources import source_digest, source_digests
from mso.spec.load import LoadedManifest, load_manifest

MANIFEST = """
app: src
services:
  api:
    run: [python3, api/app.py]
    watch: {paths: [api/, shared.py], ignore: ["*.log", "cache/"]}
    secrets:
      token: {file: api/token}
  other:
    run: [python3, other.py]
  box:
    image: nginx
"""


def _app(tmp_path: Path) -> LoadedManifest:
    (tmp_path / "api" / "cache").mkdir(parents=True)
    (tmp_path / "api" / "app.py").write_text("print('v1')\n")
    (tmp_path / "api" / "token").write_text("s3cret\n")
    (tmp_path / "shared.py").write_text("X = 1\n")
    (tmp_path / "other.py").write_text("print('other')\n")
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    return load_manifest(tmp_path / "mso.yaml", {})


def test_watched_files_are_the_code_of_a_service_with_watch(tmp_path: Path) -> None:
    loaded = _app(tmp_path)
    first = source_digests(loaded)
    assert set(first) == {"api", "other"}  # a container has its image instead
    assert first["api"].startswith("src:") and len(first["api"]) == 4 + 16
    # not code: ignored globs, mso's state, byte code, editor files, the secret file
    (tmp_path / "api" / "debug.log").write_text("x")
    (tmp_path / "api" / "cache" / "blob").write_text("x")
    (tmp_path / ".mso").mkdir()
    (tmp_path / ".mso" / "state.db").write_text("x")
    (tmp_path / "api" / "app.pyc").write_text("x")
    (tmp_path / "api" / ".app.py.swp").write_text("x")
    (tmp_path / "api" / "token").write_text("rotated\n")
    assert source_digest(loaded, "api") == first["api"]
    (tmp_path / "shared.py").write_text("X = 2\n")  # a watched file elsewhere
    second = source_digest(loaded, "api")
    assert second != first["api"]
    (tmp_path / "api" / "app.py").write_text("print('v2')\n")
    assert source_digest(loaded, "api") not in (first["api"], second)


def test_without_watch_the_cwd_is_the_code_but_not_the_manifest(tmp_path: Path) -> None:
    loaded = _app(tmp_path)
    before = source_digest(loaded, "other")
    (tmp_path / "mso.yaml").write_text(MANIFEST + "# a comment\n")
    (tmp_path / ".env").write_text("A=b\n")
    assert source_digest(loaded, "other") == before
    (tmp_path / "api" / "app.py").write_text("print('v2')\n")  # in its cwd: its code too
    assert source_digest(loaded, "other") != before
