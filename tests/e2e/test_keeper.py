"""The daemon is supervised too: its keeper starts it again when it dies or hangs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import MsoApp, wait_for
from tests.e2e.load import Load
from tests.e2e.test_local_engine import echo_app

pytestmark = pytest.mark.e2e


def keepers(state_dir: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"mso.daemon.keeper" in argv and str(state_dir).encode() in argv:
            found.append(int(entry))
    return found


def new_daemon(app: MsoApp, old: int) -> bool:
    """A daemon other than `old` holds the app's lock and answers (the lock file says
    which without asking the API, which a stopped daemon would leave hanging)."""
    text = (app.folder / ".mso" / "daemon.lock").read_text().strip()
    return bool(text) and int(text) != old and int(app.status()["pid"]) == int(text)


def test_killed_daemon_is_started_again_and_adopts_everything(app: MsoApp) -> None:
    echo_app(app, replicas=2)
    state = app.folder / ".mso"
    [keeper] = keepers(state)
    before = {r["replica"]: r["pid"] for r in app.ps()}
    daemon = int(app.status()["pid"])
    with Load(app.gateway_port, rate=100) as load:
        wait_for(lambda: load.result.ok > 50, message="traffic")
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: new_daemon(app, daemon), message="a new daemon")
        wait_for(lambda: app.all_ready(2), message="replicas READY")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    assert {r["replica"]: r["pid"] for r in app.ps()} == before  # adopted, not restarted
    assert keepers(state) == [keeper]
    assert sum(e["type"] == "daemon.started" for e in app.events()) == 2
    # A replica that dies now is restarted by the new daemon.
    victim = app.replicas("echo")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: any(r["replica"] == victim["replica"] and r["restarts"] >= 1
                         and r["state"] == "READY" for r in app.ps()),
             message="the killed replica restarted by the new daemon")
    app.cli("down")
    wait_for(lambda: keepers(state) == [], message="the keeper gone after down")


def test_a_killed_keeper_is_replaced_and_the_new_one_keeps_the_daemon(app: MsoApp) -> None:
    """Mutual supervision: the daemon starts a keeper that adopts it; that keeper then
    restarts the daemon when it is killed, and `mso down` ends them all."""
    echo_app(app, replicas=1)
    state = app.folder / ".mso"
    [keeper] = keepers(state)
    daemon = int(app.status()["pid"])
    os.kill(keeper, signal.SIGKILL)
    wait_for(lambda: len(keepers(state)) == 1 and keepers(state) != [keeper],
             message="a new keeper")
    [adopter] = keepers(state)
    assert any(e["type"] == "keeper.restarted" and e["data"]["new"] == adopter
               for e in app.events())
    assert int(app.status()["pid"]) == daemon  # the same daemon, not a second one
    with Load(app.gateway_port, rate=50) as load:
        wait_for(lambda: load.result.ok > 20, message="traffic")
        os.kill(daemon, signal.SIGKILL)
        wait_for(lambda: new_daemon(app, daemon), message="a daemon started by the adopter")
        wait_for(lambda: app.all_ready(1), message="the replica READY")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    assert keepers(state) == [adopter]
    assert "adopted daemon pid" in (state / "daemon.log").read_text()
    app.cli("down")
    wait_for(lambda: keepers(state) == [], message="the keeper gone after down")


def test_stopped_daemon_is_killed_by_the_watchdog_and_started_again(app: MsoApp) -> None:
    echo_app(app, replicas=1)
    daemon = int(app.status()["pid"])
    os.kill(daemon, signal.SIGSTOP)
    try:
        wait_for(lambda: new_daemon(app, daemon), timeout=150, message="a new daemon")
    finally:
        try:
            os.kill(daemon, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert "did not answer" in (app.folder / ".mso" / "daemon.log").read_text()
    wait_for(lambda: app.get("/")[0] == 200, message="the gateway answers")


def test_a_manifest_error_at_start_is_reported_not_restarted(app: MsoApp) -> None:
    app.write("app: bad\nservices:\n  web: {run: [PYTHON, ECHO_APP], replicas: -1}\n")
    proc = app.cli("up", "-d", check=False)
    assert proc.returncode != 0
    assert keepers(app.folder / ".mso") == []
