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


def patient_echo_app(app: MsoApp, replicas: int) -> MsoApp:
    """The echo app with a liveness probe that lets a replica start on a busy machine
    (these tests start replicas on a full disk, not slow ones)."""
    from tests.e2e.test_local_engine import ECHO_MANIFEST
    control = app.folder / "control"
    control.mkdir(exist_ok=True)
    text = ECHO_MANIFEST.replace("CONTROL_PATH", str(control)).replace(
        "replicas: 3", f"replicas: {replicas}").replace(
        "period: 300ms, timeout: 3s, failure_threshold: 3",
        "period: 1s, timeout: 3s, failure_threshold: 5")
    assert "failure_threshold: 5" in text
    app.write(text)
    app.up()
    return app


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
    app = patient_echo_app(tiny_app, replicas=2)
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
            patient_echo_app(app, replicas=2)
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
                waiting = str(store_state(app)["waiting_for"])  # asked once: it changes
                assert "read-only" in waiting.lower() or waiting == "", waiting
                seen = load.result.ok
                wait_for(lambda: load.result.ok > seen + 200, message="traffic while ro")
                # The control plane dies on the read-only disk: a new one cannot start
                # there (lock, log, sockets, store): one clear line; traffic goes on.
                daemon, keepers = control_plane(app)
                kill_and_wait([daemon, *keepers])
                up = app.cli("up", "-d", "--timeout", "30", check=False)
                lines = [ln for ln in up.stderr.splitlines() if ln.strip()]
                assert up.returncode != 0 and len(lines) == 1, up.stderr
                assert "read-only file system" in lines[0].lower(), lines
                seen = load.result.ok
                wait_for(lambda: load.result.ok > seen + 100,
                         message="traffic without a control plane")
            result = load.stop()
            assert result.failures == [], result.failures[:5]
        finally:
            app.teardown()  # `mso down` on the read-only disk: nothing may stay behind
    with ext4(tmp_path / "after", image, fresh=False) as mounted:
        assert integrity(mounted / "state.db") == "ok"


def control_plane(app: MsoApp) -> tuple[int, list[int]]:
    """The daemon's pid and its keepers'."""
    from tests.e2e.test_keeper import keepers
    state = app.folder / ".mso"
    return int((state / "daemon.lock").read_text().strip()), keepers(state)


def kill_and_wait(pids: list[int]) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") and
                             open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0]
                             != "Z" for p in pids), message="control plane gone")


def test_daemon_starting_on_a_full_disk_serves_from_its_store_and_recovers(
        tiny_app: MsoApp) -> None:
    app = patient_echo_app(tiny_app, replicas=2)
    state = app.folder / ".mso"
    before = {r["replica"]: r["pid"] for r in app.ps()}
    with Load(app.gateway_port, rate=100) as load:
        wait_for(lambda: load.result.ok > 100, message="traffic flowing")
        filler = fill(state)
        # 1. The daemon dies on the full disk: its keeper starts it again, on that disk.
        daemon, keepers = control_plane(app)
        kill_and_wait([daemon])
        wait_for(lambda: int(app.status()["pid"]) != daemon, timeout=30,
                 message="the keeper's new daemon answering on the full disk")
        assert not store_state(app)["writable"]
        # 2. Daemon and keeper die: `mso up -d` starts a new control plane on the full disk.
        daemon, keepers = control_plane(app)
        kill_and_wait([daemon, *keepers])
        up = app.cli("up", "-d", "--timeout", "60", check=False)
        assert up.returncode == 0, up.stdout + up.stderr + app.daemon_log()
        assert "Traceback" not in up.stderr
        assert "state store not writable" in up.stdout, up.stdout
        assert int(app.status()["pid"]) != daemon
        assert {r["replica"]: r["pid"] for r in app.ps()} == before  # adopted, not restarted
        assert all(r["state"] == "READY" for r in app.ps())
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 100, message="traffic on the full disk")
        filler.unlink()
        wait_for(lambda: store_state(app)["writable"], message="store writable again")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    events = app.events()
    types = [e["type"] for e in events]
    # The last daemon's start, held while the disk was full, is written after it; what the
    # daemon killed on the full disk held in memory is lost with it.
    started = [e for e in events if e["type"] == "daemon.started"]
    assert str(app.status()["pid"]) in started[-1]["message"], started
    assert types.index("store.recovered") > types.index("store.unwritable"), types
    # 3. `mso down` (which clears the desired state) and `mso up` on the full disk: the
    # daemon starts from a store closed cleanly (no room for its WAL files: read as it
    # is) but cannot record the manifest: one clear error, nothing left running.
    app.cli("down")
    filler = fill(state)
    up = app.cli("up", "-d", "--timeout", "60", check=False)
    lines = [ln for ln in up.stderr.splitlines() if ln.strip()]
    assert up.returncode != 0 and len(lines) == 1, up.stdout + up.stderr
    assert "manifest was not applied" in lines[0] and "full or read-only" in lines[0], lines
    assert "nothing is running" in app.cli("down").stdout
    filler.unlink()
    app.up()  # space is back: the same command works
    assert app.all_ready(2), app.ps()
    assert store_state(app)["writable"]
    assert "Traceback" not in (state / "daemon.log").read_text(errors="replace")


def test_first_start_on_a_full_disk_is_one_clear_error(tmp_path: Path) -> None:
    require_mount()
    folder = tmp_path / "app"
    folder.mkdir()
    app = MsoApp(folder)
    small_logs(app)
    with tmpfs(folder / ".mso", "1m"):
        fill(folder / ".mso")
        from tests.e2e.test_local_engine import ECHO_MANIFEST
        (folder / "control").mkdir()
        app.write(ECHO_MANIFEST.replace("CONTROL_PATH", str(folder / "control")))
        up = app.cli("up", "-d", "--timeout", "30", check=False)
        assert up.returncode != 0
        errors = [ln for ln in up.stderr.splitlines() if ln.strip()]
        assert len(errors) == 1 and " is full " in errors[0], up.stderr
        assert "Traceback" not in up.stderr + app.daemon_log()
        assert not list(folder.glob(".mso/*.sock")) and not keepers_of(folder)
        assert integrity(folder / ".mso" / "state.db") == "ok" \
            if (folder / ".mso" / "state.db").exists() else True


def keepers_of(folder: Path) -> list[int]:
    from tests.e2e.test_keeper import keepers
    return keepers(folder / ".mso")
