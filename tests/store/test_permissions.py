"""The state database holds secrets: it and SQLite's -wal/-shm files are owner-only."""
from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from mso.store.db import Store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def test_a_new_database_and_its_wal_files_are_private_under_a_loose_umask(
        tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "state.db")
        store.set_meta("k", "v")
        files = _files(tmp_path / "state.db")
        assert all(f.exists() for f in files)
        assert {f.name: _mode(f) for f in files} == {f.name: 0o600 for f in files}
        store.close()
    finally:
        os.umask(old)


def test_files_left_readable_by_an_older_build_are_tightened(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.execute("INSERT INTO t VALUES (1)")
    con.commit()
    for f in _files(db):
        f.chmod(0o644)
    store = Store(db)
    assert {f.name: _mode(f) for f in _files(db)} == {f.name: 0o600 for f in _files(db)}
    store.close()
    con.close()
