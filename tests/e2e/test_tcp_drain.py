"""Stopping a TCP-mode replica drains it for as long as its connections through the proxy
last (bounded by the grace period), not for the whole grace period: a restart of a
Redis-like service waited its grace every time (`replica.drain_timeout` after 8 s)."""

from __future__ import annotations

import os
import signal
import socket
import time
from typing import Any

import pytest

from tests.e2e.harness import APPS, MsoApp, wait_for

pytestmark = pytest.mark.e2e

GRACE = 20.0

TCP_MANIFEST = f"""
app: tcpdrain
gateway: {{port: GATEWAY_PORT}}
services:
  kv:
    run: [PYTHON, {APPS / "tcpecho.py"}]
    replicas: 1
    ports:
      kv: {{port: 6390, protocol: tcp}}
    health:
      readiness: {{tcp: kv, period: 200ms, timeout: 2s, failure_threshold: 1}}
    backoff: {{initial: 200ms, max: 2s, reset_after: 10s}}
    stop: {{grace: GRACE_S}}
"""


def tcp_app(app: MsoApp, grace: float = GRACE) -> tuple[str, int]:
    app.write(TCP_MANIFEST.replace("GRACE_S", f"{grace:g}s"))
    app.up()
    host, port = app.json("endpoints")["services"]["kv"]["address"].rsplit(":", 1)
    return host, int(port)


def connect(address: tuple[str, int]) -> socket.socket:
    """A client connection through the proxy, known to have reached the replica."""
    s = socket.create_connection(address, timeout=10)
    s.sendall(b"hello")
    assert s.recv(5) == b"hello"
    return s


def kv_events(app: MsoApp, replica: str) -> list[dict[str, Any]]:
    return [e for e in app.events() if e["replica"] == replica]


def stop_event(events: list[dict[str, Any]], to: str) -> dict[str, Any] | None:
    return next((e for e in events if e["type"] == "replica.state"
                 and e["data"].get("to") == to), None)


def restart_old(app: MsoApp) -> str:
    """`mso restart kv`; return the old replica's id once it is STOPPING (draining)."""
    old = app.replicas("kv")[0]["replica"]
    app.cli("restart", "kv")
    wait_for(lambda: stop_event(kv_events(app, old), "STOPPING"), 30,
             message=f"{old} STOPPING")
    return str(old)


@pytest.mark.parametrize("connections", [0, 1, 50])
def test_tcp_restart_drains_as_long_as_the_longest_connection(
        app: MsoApp, connections: int) -> None:
    address = tcp_app(app)
    conns = [connect(address) for _ in range(connections)]
    old = restart_old(app)
    last_closed = None
    if conns:
        for c in conns[:-1]:
            c.close()
        # The replica is still draining: the last connection is open (and still served).
        assert stop_event(kv_events(app, old), "STOPPED") is None
        assert any(r["replica"] == old and r["state"] == "STOPPING" for r in app.ps())
        conns[-1].sendall(b"still")
        assert conns[-1].recv(5) == b"still"
        last_closed = time.time()
        conns[-1].close()
    wait_for(lambda: stop_event(kv_events(app, old), "STOPPED"), GRACE * 2,
             message=f"{old} STOPPED")
    events = kv_events(app, old)
    assert not any(e["type"] == "replica.drain_timeout" for e in events), events
    drained = next(e for e in events if e["type"] == "replica.drained")
    stopping = stop_event(events, "STOPPING")
    assert stopping is not None
    # Well below the grace period: the drain ends with the work, not with the clock.
    assert drained["ts"] - stopping["ts"] < GRACE / 4, events
    if last_closed is not None:
        assert drained["ts"] >= last_closed - 0.05  # it did wait for the last connection
        assert drained["ts"] - last_closed < GRACE / 4


def test_tcp_drain_is_bounded_by_the_grace_period(app: MsoApp) -> None:
    grace = 2.0
    address = tcp_app(app, grace=grace)
    held = connect(address)  # a client that never lets go
    old = restart_old(app)
    wait_for(lambda: stop_event(kv_events(app, old), "STOPPED"), 30,
             message=f"{old} STOPPED")
    events = kv_events(app, old)
    timeout = next(e for e in events if e["type"] == "replica.drain_timeout")
    stopping = stop_event(events, "STOPPING")
    assert stopping is not None
    assert grace - 0.1 <= timeout["ts"] - stopping["ts"] < grace * 4, events
    held.close()


def test_connections_to_a_dead_process_do_not_hold_the_next_drain(app: MsoApp) -> None:
    """An idle pooled client keeps its end of a connection to a replica that was killed;
    the replica is restarted under the same id, and its next stop used to wait for that
    connection (to a process long gone) until the grace period."""
    address = tcp_app(app)
    pooled = [connect(address) for _ in range(3)]
    victim = app.replicas("kv")[0]
    os.kill(victim["pid"], signal.SIGKILL)
    wait_for(lambda: any(r["replica"] == victim["replica"] and r["state"] == "READY"
                         and r["pid"] != victim["pid"] for r in app.replicas("kv")), 30,
             message="the replica restarted")
    old = restart_old(app)
    wait_for(lambda: stop_event(kv_events(app, old), "STOPPED"), GRACE * 2,
             message=f"{old} STOPPED")
    events = kv_events(app, old)
    assert not any(e["type"] == "replica.drain_timeout" for e in events), events
    stopping = [e for e in events if e["type"] == "replica.state"
                and e["data"].get("to") == "STOPPING"][-1]
    drained = [e for e in events if e["type"] == "replica.drained"][-1]
    assert drained["ts"] - stopping["ts"] < GRACE / 4, events
    for c in pooled:
        c.close()
