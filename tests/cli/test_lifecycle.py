"""Lifecycle commands through the real CLI: rolling `mso restart` and foreground `mso up`.

Both run against their own app, since they replace or stop every replica.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.cli.conftest import say, start_echo_app, write_echo_app
from tests.cli.lines import StreamingCli
from tests.e2e.harness import MsoApp, instance_processes, wait_for
from tests.e2e.load import Load

pytestmark = pytest.mark.e2e


def replay(events: list[dict[str, Any]], service: str,
           start: dict[str, str]) -> tuple[int, int, int]:
    """Replay replica state changes; return (fewest READY, most STOPPING, most alive)."""
    state = dict(start)
    fewest_ready, most_stopping, most_alive = len(state), 0, len(state)
    for e in events:
        if e["type"] != "replica.state" or e["service"] != service:
            continue
        state[e["replica"]] = e["data"]["to"]
        values = list(state.values())
        fewest_ready = min(fewest_ready, values.count("READY"))
        most_stopping = max(most_stopping, values.count("STOPPING"))
        most_alive = max(most_alive, sum(v not in ("STOPPED", "FAILED") for v in values))
    return fewest_ready, most_stopping, most_alive


def test_restart_replaces_every_replica_one_at_a_time_without_failed_requests(
        app_factory: Callable[[str], MsoApp]) -> None:
    app = start_echo_app(app_factory("restart"), replicas=3)
    before = {r["replica"]: r["pid"] for r in app.replicas("echo")}
    after_id = app.events()[-1]["id"]
    with Load(app.gateway_port, rate=100) as load:
        wait_for(lambda: load.result.ok > 50, message="traffic flowing")
        proc = app.cli("restart", "echo")
        assert "rolling restart" in proc.stdout

        def replaced() -> bool:
            now = app.replicas("echo")
            return (len(now) == 3 and all(r["state"] == "READY" for r in now)
                    and not ({r["pid"] for r in now} & set(before.values())))

        wait_for(replaced, timeout=60, message="every echo replica replaced")
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 50, message="traffic after the restart")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    events = [e for e in app.events() if e["id"] > after_id]
    assert any(e["type"] == "service.restart" for e in events)
    fewest_ready, most_stopping, most_alive = replay(
        events, "echo", {name: "READY" for name in before})
    assert fewest_ready >= 3, "a replica left before its replacement was READY"
    assert most_stopping == 1 and most_alive <= 4, "more than one replica at a time"
    # db was not touched.
    assert [r["restarts"] for r in app.replicas("db")] == [0]


@pytest.mark.parametrize("ignored", [False, True],
                         ids=["sigint-default", "started-with-sigint-ignored"])
def test_foreground_up_streams_logs_and_sigint_stops_everything(
        app_factory: Callable[[str], MsoApp], ignored: bool) -> None:
    app = app_factory("foreground")
    write_echo_app(app)
    up = StreamingCli(app.folder, "up", ignore_sigint=ignored)
    try:
        wait_for(lambda: app.get("/")[0] == 200, timeout=60, message="gateway answers")
        app.instance = app.status()["instance"]
        wait_for(lambda: app.all_ready(4), message="all READY")
        marker = f"fg-{uuid.uuid4().hex[:10]}"
        say(app, marker)
        assert "ticker-1" in up.wait_line(lambda line: marker in line)
        assert instance_processes(app.instance)
        up.proc.send_signal(signal.SIGINT)
        code, _, err = up.finish(timeout=90)
    finally:
        up.stop()
    assert code == 0, err
    assert "Traceback" not in err
    assert instance_processes(app.instance) == []
    status = app.cli("ps", check=False)
    assert status.returncode == 0 and "mso is not running: stopped by `mso down`" \
        in status.stdout


def test_up_again_on_a_running_app_changes_nothing(running: MsoApp) -> None:
    before = {r["replica"]: r["pid"] for r in running.ps()}
    proc = running.cli("up", "-d")
    assert "no changes" in proc.stdout
    assert {r["replica"]: r["pid"] for r in running.ps()} == before
    assert all(len(running.json("releases", s)) == 1 for s in ("db", "echo", "ticker"))
