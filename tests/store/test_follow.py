"""Reading an engine store's event log: tail, service filter, follow."""

from __future__ import annotations

from pathlib import Path

from mso.store.db import Store
from mso.store.follow import read_events

from tests.store.event_log import seed_events


def _store(tmp_path: Path) -> Path:
    return seed_events(tmp_path / "engine.db")


def test_tail_and_service_filter_keep_oldest_first(tmp_path: Path) -> None:
    db = _store(tmp_path)
    assert [e["type"] for e in read_events(db, None, False, 2)] == \
        ["analysis.fail", "swarm.gateway"]
    assert [e["type"] for e in read_events(db, "web", False, 200)] == \
        ["release.created", "analysis.fail"]
    assert list(read_events(db, None, False, 0)) == []


def test_follow_yields_events_recorded_after_it_started(tmp_path: Path) -> None:
    db = _store(tmp_path)
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        store = Store(db)
        store.add_event("rollout.promoted", "canary promoted", "web")
        store.close()

    stream = read_events(db, "web", True, 1, sleep=nap)
    assert next(stream)["type"] == "analysis.fail"
    assert next(stream)["type"] == "rollout.promoted"
    assert naps
    stream.close()
