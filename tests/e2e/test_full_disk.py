"""Issue 15 part 4 end to end: `.mso/` on a tiny real filesystem that fills up (tmpfs) or
turns read-only (ext4 after an error), under traffic through the gateway."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import MsoApp, wait_for
from tests.e2e.load import Load
from tests.e2e.test_local_engine import echo_app
from tests.tinyfs import emergency_ro, ext4, fill, require_mount, tmpfs

pytestmark = pytest.mark.e2e


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def store_state(app: MsoApp) -> dict[str, object]:
    return dict(app.json("ps")["store"])


def small_logs(app: MsoApp) -> None:
    # A 4 MiB disk: raw output files 64 KiB each (and as much reserved), history 256 KiB.
    app.env.update(MSO_RAW_LOG_SIZE="64Ki", MSO_LOG_MAX_SIZE="256Ki")


@pytest.fixture
def tiny_app(tmp_path: Path) -> Iterator[MsoApp]:
    require_mount()
    folder = tmp_path / "app"
    folder.mkdir()
    app = MsoApp(folder)
    small_logs(app)
    with tmpfs(folder / ".mso", "4m"):
        try:
            yield app
        finally:
            app.teardown()
            assert integrity(folder / ".mso" / "state.db") == "ok"


def test_full_disk_keeps_serving_says_it_once_and_recovers(tiny_app: MsoApp) -> None:
    app = echo_app(tiny_app, replicas=2)
    state = app.folder / ".mso"
    with Load(app.gateway_port, rate=100) as load:
        wait_for(lambda: load.result.ok > 100, message="traffic flowing")
        filler = fill(state)
        victim = app.replicas("echo")[0]
        os.kill(victim["pid"], signal.SIGKILL)  # state changes the store cannot take
        wait_for(lambda: not store_state(app)["writable"], message="store reported unwritable")
        wait_for(lambda: any(r["replica"] == victim["replica"] and r["restarts"] >= 1
                             and r["state"] == "READY" for r in app.ps()),
                 message="killed replica restarted on the full disk")
        scale = app.cli("scale", "echo=3", check=False)
        assert scale.returncode != 0 and "full or read-only" in scale.stderr, scale.stderr
        assert "state store not writable" in app.cli("ps").stdout
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 200, message="traffic while full")
        assert all(r["state"] == "READY" for r in app.ps())

        freed = time.monotonic()
        filler.unlink()
        wait_for(lambda: store_state(app)["writable"], message="store writable again")
        recovered = time.monotonic() - freed
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 50, message="traffic after recovery")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    assert recovered < 5.0, recovered
    events = app.events()
    types = [e["type"] for e in events]
    assert types.count("store.unwritable") == 1 and types.count("store.recovered") == 1
    held = [e for e in events if e["replica"] == victim["replica"]
            and e["type"] == "replica.state" and "BACKOFF" in e["message"]]
    assert held, "the crash recorded while the disk was full was lost"
    rows = {r["replica"]: r for r in app.ps()}
    assert rows[victim["replica"]]["restarts"] >= 1
    log = (state / "daemon.log").read_text(errors="replace")
    assert log.count("state store not writable") <= 1, log[-2000:]
    app.cli("scale", "echo=3")  # writes work again
    wait_for(lambda: app.all_ready(3), message="scaled after recovery")


def test_read_only_disk_keeps_serving_and_down_still_stops_everything(
        tmp_path: Path) -> None:
    require_mount()
    folder = tmp_path / "app"
    folder.mkdir()
    app = MsoApp(folder)
    small_logs(app)
    image = tmp_path / "state.img"
    with ext4(folder / ".mso", image):
        try:
            echo_app(app, replicas=2)
            with Load(app.gateway_port, rate=100) as load:
                wait_for(lambda: load.result.ok > 100, message="traffic flowing")
                emergency_ro(folder / ".mso")
                victim = app.replicas("echo")[0]
                os.kill(victim["pid"], signal.SIGKILL)
                wait_for(lambda: not store_state(app)["writable"],
                         message="store reported unwritable")
                wait_for(lambda: any(r["replica"] == victim["replica"] and r["restarts"] >= 1
                                     and r["state"] == "READY" for r in app.ps()),
                         message="killed replica restarted on the read-only disk")
                assert "read-only" in str(store_state(app)["waiting_for"]).lower() or \
                    store_state(app)["waiting_for"] == ""
                seen = load.result.ok
                wait_for(lambda: load.result.ok > seen + 200, message="traffic while ro")
            result = load.stop()
            assert result.failures == [], result.failures[:5]
        finally:
            app.teardown()  # `mso down` on the read-only disk: nothing may stay behind
    with ext4(tmp_path / "after", image, fresh=False) as mounted:
        assert integrity(mounted / "state.db") == "ok"
