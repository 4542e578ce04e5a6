"""LogStore: rotation bounds, filters, redaction on disk, live follow."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mso.engines.local.logstore import LogStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_read_filters_by_service_since_and_tail(tmp_path: Path) -> None:
    store = LogStore(tmp_path, clock=Clock())
    for i in range(5):
        store.append("web", "web-1", 1, "stdout", f"w{i}")
        store.append("db", "db-1", 2, "stderr", f"d{i}")
    assert [r["line"] for r in store.read("web")] == [f"w{i}" for i in range(5)]
    assert [r["line"] for r in store.read("web", tail=2)] == ["w3", "w4"]
    assert [r["line"] for r in store.read(None, tail=3)] == ["d3", "w4", "d4"]
    merged = [r["line"] for r in store.read()]
    assert merged == [x for i in range(5) for x in (f"w{i}", f"d{i}")]
    since = store.read("db")[2]["ts"]
    assert [r["line"] for r in store.read("db", since=since)] == ["d2", "d3", "d4"]
    rec = store.read("db")[0]
    assert set(rec) == {"ts", "service", "replica", "release", "stream", "line"}
    assert (rec["replica"], rec["release"], rec["stream"]) == ("db-1", 2, "stderr")


def test_rotation_keeps_service_history_bounded(tmp_path: Path) -> None:
    store = LogStore(tmp_path, max_bytes_per_service=8192, segments=4)
    for i in range(2000):
        store.append("web", "web-1", 1, "stdout", f"line {i:05d} " + "x" * 40)
    files = list((tmp_path / "web").glob("*.jsonl"))
    assert len(files) <= 4
    assert sum(f.stat().st_size for f in files) <= 8192 + 200
    lines = [r["line"] for r in store.read("web")]
    assert lines[-1].startswith("line 01999")
    assert not any(line.startswith("line 00000") for line in lines)


def test_secrets_never_reach_disk(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.redact(["hunter2", b"s3cr3t-token"])
    store.append("web", "web-1", 1, "stdout", "password=hunter2 token=s3cr3t-token!")
    assert store.read("web")[0]["line"] == "password=*** token=***!"
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*.jsonl"))
    assert b"hunter2" not in raw and b"s3cr3t" not in raw


def test_unsafe_service_names_stay_inside_the_store(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "store")
    store.append("../evil", "x", 1, "stdout", "hi")
    assert not (tmp_path / "evil").exists()
    assert store.read("../evil")[0]["line"] == "hi"


@pytest.mark.anyio
async def test_follow_yields_backlog_then_live_records(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.append("web", "web-1", 1, "stdout", "old")
    got: list[str] = []

    async def reader() -> None:
        async for rec in store.follow("web"):
            got.append(rec["line"])
            if len(got) == 3:
                return

    task = asyncio.ensure_future(reader())
    from .conftest import until

    await until(lambda: got == ["old"], what="backlog")
    store.append("db", "db-1", 1, "stdout", "other service")
    store.append("web", "web-1", 1, "stdout", "new1")
    store.append("web", "web-1", 1, "stdout", "new2")
    await asyncio.wait_for(task, 10)
    assert got == ["old", "new1", "new2"]
    assert store._followers == []  # unsubscribed when the consumer stopped
