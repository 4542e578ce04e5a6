"""The gateway pod's processes, run for real on loopback: table fill-in, control relay, bridge."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mso.engines.kubernetes.bridge import address_hex, listeners, needs_bridge
from mso.engines.kubernetes.control import ControlError, GatewayControl
from mso.engines.kubernetes.gatewayd import fill_table


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_fill_table_substitutes_and_drops_unknown_hosts() -> None:
    text = json.dumps({"version": 1, "listeners": [], "clusters": {"web/http": {"subsets": {
        "stable": {"weight": 100, "endpoints": [
            {"id": "web-stable", "address": "${WEB_STABLE_SERVICE_HOST}:8000"},
            {"id": "gone", "address": "${GONE_SERVICE_HOST}:8000"}]}}}}})
    table = fill_table(text, {"WEB_STABLE_SERVICE_HOST": "10.201.0.9"})
    eps = table["clusters"]["web/http"]["subsets"]["stable"]["endpoints"]
    assert eps == [{"id": "web-stable", "address": "10.201.0.9:8000"}]


def start_gatewayd(tmp_path: Path, gateway_port: int,
                   control_port: int) -> subprocess.Popen[bytes]:
    table = {"version": 1, "clusters": {}, "listeners": [
        {"name": "gateway", "bind": "127.0.0.1", "port": gateway_port, "mode": "http",
         "routes": []}]}
    (tmp_path / "table.json").write_text(json.dumps(table))
    (tmp_path / "tok").mkdir(exist_ok=True)
    (tmp_path / "tok" / "token").write_text("sekrit\n")
    proc = subprocess.Popen([sys.executable, "-m", "mso.engines.kubernetes.gatewayd",
                             "--table", str(tmp_path / "table.json"), "--token-dir",
                             str(tmp_path / "tok"), "--control-port", str(control_port),
                             "--bind", "127.0.0.1", "--state",
                             str(tmp_path / "state" / "table.json")])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", control_port), 1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc


@pytest.fixture
def gatewayd(tmp_path: Path) -> Iterator[tuple[int, int, str]]:
    gateway_port, control_port = free_port(), free_port()
    proc = start_gatewayd(tmp_path, gateway_port, control_port)
    try:
        yield gateway_port, control_port, "sekrit"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_control_relay_sets_tables_and_reads_metrics(gatewayd: tuple[int, int, str]) -> None:
    gateway_port, control_port, token = gatewayd
    control = GatewayControl("127.0.0.1", control_port, token)
    table = {"version": 5, "clusters": {}, "listeners": [
        {"name": "gateway", "bind": "127.0.0.1", "port": gateway_port, "mode": "http",
         "routes": []}]}
    assert control.set_table(table) == 5
    assert "clusters" in control.metrics()
    with socket.create_connection(("127.0.0.1", gateway_port), 5) as s:  # the listener serves
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 404")


def test_a_killed_proxy_is_replaced_and_a_restart_serves_the_saved_table(
        tmp_path: Path) -> None:
    """gatewayd runs the proxy supervised: a SIGKILLed serving proxy hands over to the
    spare, and a new gatewayd with the same state file serves the pushed table, not the
    rendered one."""
    gateway_port, control_port = free_port(), free_port()
    proc = start_gatewayd(tmp_path, gateway_port, control_port)
    control = GatewayControl("127.0.0.1", control_port, "sekrit")
    try:
        pushed = {"version": 7, "clusters": {}, "listeners": [
            {"name": "gateway", "bind": "127.0.0.1", "port": gateway_port, "mode": "http",
             "routes": []}]}
        assert control.set_table(pushed) == 7
        first = wait(lambda: (p := control.ping()).get("spare") and p)
        os.kill(int(first["proxy"]), signal.SIGKILL)
        after = wait(lambda: (p := control.ping())["failovers"] == 1 and p)
        assert after["proxy"] != first["proxy"] and after["version"] == 7
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    proc = start_gatewayd(tmp_path, gateway_port, control_port)
    try:
        assert wait(lambda: control.ping())["version"] == 7
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def wait(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except ControlError:
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_control_relay_refuses_a_wrong_token(gatewayd: tuple[int, int, str]) -> None:
    _, control_port, _ = gatewayd
    with pytest.raises(ControlError, match="refused"):
        GatewayControl("127.0.0.1", control_port, "wrong").metrics()


def test_bridge_sees_loopback_only_listeners() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        found = listeners(port)
        assert found == {address_hex("127.0.0.1")}
        assert needs_bridge(found) is True


def test_bridge_leaves_apps_serving_every_address_alone() -> None:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        assert needs_bridge(listeners(s.getsockname()[1])) is False
    assert needs_bridge(set()) is None


def test_address_hex_matches_proc_net_tcp() -> None:
    assert address_hex("127.0.0.1") == "0100007F"
    assert os.path.exists("/proc/net/tcp")
