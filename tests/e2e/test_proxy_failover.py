"""The data plane is supervised: a SIGKILLed proxy costs no refused connection.

The daemon holds copies of the proxy's listening sockets and keeps a spare proxy
started; when the proxy dies the spare takes the sockets and the route table
(src/mso/daemon/proxy_manager.py). Clients that open a connection while no proxy runs
wait in the accept backlog instead of being refused.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time

import pytest

from tests.e2e.harness import MsoApp, instance_processes, wait_for
from tests.e2e.load import Load
from tests.e2e.test_local_engine import echo_app

pytestmark = pytest.mark.e2e


def proxy_pid(app: MsoApp, key: str = "proxy_process") -> int | None:
    db = sqlite3.connect(app.folder / ".mso" / "state.db")
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return int(json.loads(row[0])["pid"]) if row else None


def restarts(app: MsoApp) -> list[dict[str, object]]:
    return [e for e in app.events() if e["type"] == "proxy.restarted"]


def test_sigkilled_proxy_is_replaced_without_a_refused_connection(app: MsoApp) -> None:
    echo_app(app, replicas=2)
    wait_for(lambda: proxy_pid(app, "proxy_spare"), message="a spare proxy")
    kills: list[float] = []
    with Load(app.gateway_port, rate=200, keepalive=False) as load:
        wait_for(lambda: load.result.ok > 100, message="traffic flowing")
        for round_ in range(1, 4):
            victim = proxy_pid(app)
            assert victim is not None
            wait_for(lambda: proxy_pid(app, "proxy_spare"), message="a spare proxy")
            kills.append(time.monotonic())
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: len(restarts(app)) >= round_, message=f"restart {round_}")
            assert proxy_pid(app) != victim
            seen = load.result.ok
            wait_for(lambda: load.result.ok > seen + 50, message="traffic after the restart")
    result = load.stop()
    # At about 1 ms per request, a kill rarely catches one in flight.
    result.assert_only_in_flight_at(kills, threads=4)
    assert result.ok > 300
    # One proxy serving and one spare: no proxy left over from the killed ones.
    assert app.instance is not None
    instance = app.instance

    def proxies() -> list[int]:
        found = []
        for pid in instance_processes(instance):
            try:
                if b"mso.proxy" in open(f"/proc/{pid}/cmdline", "rb").read():
                    found.append(pid)
            except OSError:
                pass
        return found

    # The new spare may still be starting: wait for the count, read afresh each time.
    wait_for(lambda: len(proxies()) == 2, message="one active and one spare proxy")
    messages = [str(e["message"]) for e in restarts(app)]
    assert all("took over its listening sockets" in m for m in messages), messages


def test_proxy_and_daemon_both_killed_are_restored_by_the_next_up(app: MsoApp) -> None:
    echo_app(app, replicas=1)
    wait_for(lambda: proxy_pid(app, "proxy_spare"), message="a spare proxy")
    daemon, proxy, spare = app.status()["pid"], proxy_pid(app), proxy_pid(app, "proxy_spare")
    for pid in (daemon, proxy, spare):
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    app.up()
    wait_for(lambda: app.get("/")[0] == 200, message="the gateway answers again")
    assert proxy_pid(app) not in (proxy, spare)
    wait_for(lambda: proxy_pid(app, "proxy_spare") not in (None, proxy, spare),
             message="a new spare proxy")


def test_a_stopped_proxy_is_killed_and_replaced(app: MsoApp) -> None:
    echo_app(app, replicas=1)
    wait_for(lambda: proxy_pid(app, "proxy_spare"), message="a spare proxy")
    victim = proxy_pid(app)
    assert victim is not None
    os.kill(victim, signal.SIGSTOP)
    try:
        wait_for(lambda: any(e["type"] == "proxy.hung" for e in app.events()),
                 message="the hung proxy reported")
        wait_for(lambda: restarts(app), message="a proxy took over")
        wait_for(lambda: app.get("/", timeout=2)[0] == 200, message="the gateway answers")
        assert proxy_pid(app) != victim
        assert not os.path.exists(f"/proc/{victim}") or \
            open(f"/proc/{victim}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_daemon_and_proxy_killed_together_refuse_no_connection(app: MsoApp) -> None:
    # The spare holds copies of the listening sockets too: with the daemon and the
    # serving proxy both dead, clients wait in the backlog until the keeper's new daemon
    # makes the spare serve.
    echo_app(app, replicas=2)
    spare = wait_for(lambda: proxy_pid(app, "proxy_spare"), message="a spare proxy")
    daemon, proxy = app.status()["pid"], proxy_pid(app)
    kills: list[float] = []
    with Load(app.gateway_port, rate=100, keepalive=False) as load:
        wait_for(lambda: load.result.ok > 50, message="traffic flowing")
        kills.append(time.monotonic())
        os.kill(daemon, signal.SIGKILL)
        assert proxy is not None
        os.kill(proxy, signal.SIGKILL)
        wait_for(lambda: proxy_pid(app) == spare, timeout=60, message="the spare serving")
        seen = load.result.ok
        wait_for(lambda: load.result.ok > seen + 50, message="traffic after the take-over")
    result = load.stop()
    assert not any("Refused" in f or "timed out" in f for f in result.failures), \
        result.failures
    for (start, end), failure in zip(result.failed_spans, result.failures):
        assert start <= kills[0] <= end, (failure, start, end, kills)
