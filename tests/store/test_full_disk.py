"""The store on a real full (tmpfs) and read-only (ext4, emergency remount) filesystem."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from mso.store.db import Store
from mso.store.health import StoreUnavailable
from mso.store.records import Desired, ReplicaRecord
from tests.tinyfs import emergency_ro, ext4, fill, require_mount, tmpfs


def integrity(path: Path) -> str:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def replica(rid: str, state: str) -> ReplicaRecord:
    return ReplicaRecord(id=rid, service="api", ordinal=0, release=1, subset="stable",
                         state=state, pid=None, start_time=None)


def write_until_refused(store: Store) -> None:
    for i in range(100_000):
        store.add_event("test.filler", "x" * 2000, data={"i": i})
        if not store.health.writable:
            return
    raise AssertionError("the store never ran out of space")


@pytest.fixture
def small(tmp_path: Path):  # type: ignore[no-untyped-def]
    require_mount()
    with tmpfs(tmp_path / "fs", "1m") as folder:
        yield folder


def test_full_disk_holds_records_says_so_once_and_catches_up(
        small: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(small / "state.db")
    store.set_desired(Desired("api", "service", 1, 2, 2))
    store.upsert_replica(replica("api-0", "READY"))
    filler = fill(small)
    caplog.set_level(logging.INFO, logger="mso.store")
    write_until_refused(store)
    for i in range(50):  # many more attempts: still one log line
        store.add_event("replica.state", f"held {i}", "api", "api-0")
    store.upsert_replica(replica("api-0", "BACKOFF"))
    store.upsert_replica(replica("api-1", "READY"))
    store.delete_replica("api-1")
    with pytest.raises(StoreUnavailable, match="full or read-only"):
        store.set_desired(Desired("api", "service", 1, 5, 2))
    assert store.desired()["api"].replicas == 2  # nothing half-written
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert not store.health.writable and store.health.failed_writes >= 2
    assert not store.recover(force=True)  # still full: nothing written, nothing lost
    assert "bytes free" in store.health.waiting_for
    assert integrity(store.path) == "ok"

    filler.unlink()
    assert store.recover(force=True)
    assert store.health.writable and store.health.recoveries == 1
    states = {r.id: r.state for r in store.replicas()}
    assert states == {"api-0": "BACKOFF"}
    events = store.events(limit=100_000)
    held = [e.message for e in events if e.type == "replica.state"]
    assert held == [f"held {i}" for i in range(50)]
    types = [e.type for e in events]
    assert types.index("store.unwritable") < types.index("replica.state") \
        < types.index("store.recovered")
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    store.set_desired(Desired("api", "service", 1, 5, 2))  # writes work again
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    store.close()
    assert integrity(small / "state.db") == "ok"


def test_read_only_filesystem_behaves_like_a_full_one(tmp_path: Path) -> None:
    require_mount()
    with ext4(tmp_path / "fs", tmp_path / "fs.img") as folder:
        store = Store(folder / "state.db")
        store.set_desired(Desired("api", "service", 1, 2, 2))
        store.add_event("before", "written")
        emergency_ro(folder)
        event = store.add_event("during", "held")
        assert event.id == 0 and not store.health.writable
        store.upsert_replica(replica("api-0", "READY"))
        with pytest.raises(StoreUnavailable):
            store.set_meta("k", "v")
        assert not store.recover(force=True)
        assert "read-only" in store.health.waiting_for.lower(), store.health.waiting_for
        assert store.desired()["api"].replicas == 2  # reads still work
        assert [e.type for e in store.events()] == ["before"]
        store.close()
    # The image as the kernel left it: the database is intact.
    with ext4(tmp_path / "fs2", tmp_path / "fs.img", fresh=False) as folder:
        assert integrity(folder / "state.db") == "ok"


def test_opening_on_a_full_disk_serves_reads_holds_writes_and_catches_up(small: Path) -> None:
    store = Store(small / "state.db")
    store.set_desired(Desired("api", "service", 1, 2, 2))
    store.set_meta("instance_id", "abc")
    store.close()
    filler = fill(small)
    with pytest.raises(StoreUnavailable, match="cannot be created"):
        Store(small / "other.db")  # a new store needs space for its tables: one clear error
    reopened = Store(small / "state.db")  # what a daemon starting on the full disk does
    assert reopened.desired()["api"].replicas == 2 and reopened.get_meta("instance_id") == "abc"
    reopened.set_meta("instance_id", "abc")  # unchanged: no write, so nothing refused
    reopened.set_desired(Desired("api", "service", 1, 2, 2))
    reopened.add_event("daemon.started", "held")
    reopened.upsert_replica(replica("api-0", "READY"))
    assert not reopened.health.writable
    with pytest.raises(StoreUnavailable):
        reopened.set_desired(Desired("api", "service", 1, 3, 3))
    filler.unlink()
    (small / "other.db").unlink(missing_ok=True)
    assert reopened.recover(force=True)
    assert [e.type for e in reopened.events()][-3:] == ["store.unwritable", "daemon.started",
                                                         "store.recovered"]
    assert {r.id for r in reopened.replicas()} == {"api-0"}
    reopened.close()
    assert integrity(small / "state.db") == "ok"
