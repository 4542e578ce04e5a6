"""Control protocol over the unix socket: ops, malformed input, metrics listener, workers."""
from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import stat
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mso.proxy.client import ProxyClient, ProxyRejected, ProxyUnavailable

from .conftest import Proxy, http_table

pytestmark = pytest.mark.e2e


def raw_control(path: str, lines: list[bytes]) -> list[dict[str, Any]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(path)
        f = s.makefile("rwb")
        out = []
        for line in lines:
            f.write(line + b"\n")
            f.flush()
            out.append(json.loads(f.readline()))
        return out


def test_socket_is_private_and_ping_reports_pid(proxy: Proxy) -> None:
    assert stat.S_IMODE(os.stat(proxy.control).st_mode) == 0o600
    resp = raw_control(proxy.control, [b'{"op": "ping"}'])[0]
    assert resp["ok"] is True and resp["pid"] == proxy.proc.pid and resp["version"] == 0


@pytest.mark.parametrize("line,needle", [
    (b"not json", "invalid JSON"),
    (b"[1, 2]", "object"),
    (b'{"op": "explode"}', "unknown op"),
    (b'{"op": "set_table"}', "table"),
    (b'{"op": "set_table", "table": {"version": 1}}', "listeners"),
    (b'{"op": "drain"}', "endpoint"),
    (b'{"op": "drain", "endpoint": "x", "timeout": "soon"}', "timeout"),
])
def test_malformed_requests_get_error_and_connection_survives(
    proxy: Proxy, line: bytes, needle: str
) -> None:
    bad, good = raw_control(proxy.control, [line, b'{"op": "ping"}'])
    assert bad["ok"] is False and needle in bad["error"]
    assert good["ok"] is True


def test_bind_failure_rejects_table_and_keeps_previous(backends: Any, proxy: Proxy) -> None:
    b = backends("b")
    ports = proxy.set_table(http_table({"web": {"stable": (100, [b])}}))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    table = http_table({"web": {"stable": (100, [b])}}, version=2, extra_listeners=[
        {"name": "clash", "bind": "127.0.0.1", "port": busy.getsockname()[1], "mode": "http",
         "cluster": "web"}])
    with pytest.raises(ProxyRejected, match="bind"):
        proxy.call("set_table", table)
    assert proxy.call("ping")["version"] == 1
    assert proxy.call("ping")["listeners"] == ports
    busy.close()


def test_a_port_handed_from_one_listener_to_another_is_taken_over(
        backends: Any, proxy: Proxy) -> None:
    """The gateway moves onto the metrics port while metrics move elsewhere, in one table."""
    b = backends("b")
    ports = proxy.set_table(http_table({"web": {"stable": (100, [b])}}, extra_listeners=[
        {"name": "metrics", "bind": "127.0.0.1", "port": 0, "mode": "metrics"}]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        elsewhere = s.getsockname()[1]
    table = http_table({"web": {"stable": (100, [b])}}, version=2, extra_listeners=[
        {"name": "metrics", "bind": "127.0.0.1", "port": elsewhere, "mode": "metrics"}])
    table["listeners"][0]["port"] = ports["metrics"]
    moved = proxy.set_table(table)
    assert moved["gw"] == ports["metrics"] and moved["metrics"] == elsewhere
    c = http.client.HTTPConnection("127.0.0.1", moved["gw"], timeout=20)
    c.request("GET", "/echo")
    assert json.loads(c.getresponse().read())["backend"] == "b"


def test_a_failed_hand_over_leaves_the_old_listeners_serving(
        backends: Any, proxy: Proxy) -> None:
    b = backends("b")
    ports = proxy.set_table(http_table({"web": {"stable": (100, [b])}}, extra_listeners=[
        {"name": "metrics", "bind": "127.0.0.1", "port": 0, "mode": "metrics"}]))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    table = http_table({"web": {"stable": (100, [b])}}, version=2, extra_listeners=[
        {"name": "metrics", "bind": "127.0.0.1", "port": busy.getsockname()[1],
         "mode": "metrics"}])
    table["listeners"][0]["port"] = ports["metrics"]  # gw takes metrics' port; metrics fail
    with pytest.raises(ProxyRejected, match="bind"):
        proxy.call("set_table", table)
    busy.close()
    assert proxy.call("ping")["listeners"] == ports
    m = http.client.HTTPConnection("127.0.0.1", ports["metrics"], timeout=20)
    m.request("GET", "/metrics")
    assert m.getresponse().status == 200  # reopened, still the metrics listener


def test_unchanged_listener_keeps_its_socket_across_tables(backends: Any, proxy: Proxy) -> None:
    a, b = backends("a"), backends("b")
    port = proxy.set_table(http_table({"web": {"stable": (100, [a])}}))["gw"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("GET", "/echo")
    assert json.loads(c.getresponse().read())["backend"] == "a"
    assert proxy.set_table(http_table({"web": {"stable": (100, [b])}}, version=2))["gw"] == port
    c.request("GET", "/echo")  # same client connection, new route table
    assert json.loads(c.getresponse().read())["backend"] == "b"


def test_metrics_listener_serves_prometheus_text(backends: Any, proxy: Proxy) -> None:
    b = backends("b")
    ports = proxy.set_table(http_table({"web": {"stable": (100, [b])}}, extra_listeners=[
        {"name": "metrics", "bind": "127.0.0.1", "port": 0, "mode": "metrics"}]))
    c = http.client.HTTPConnection("127.0.0.1", ports["gw"], timeout=20)
    for _ in range(7):
        c.request("GET", "/echo")
        c.getresponse().read()
    m = http.client.HTTPConnection("127.0.0.1", ports["metrics"], timeout=20)
    m.request("GET", "/metrics")
    r = m.getresponse()
    assert r.status == 200 and r.getheader("content-type").startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
    assert fams["mso_proxy_requests"].samples[0].value == 7
    m.request("GET", "/other")
    assert m.getresponse().status == 404


def test_client_raises_unavailable_without_a_proxy(tmp_path: Any) -> None:
    async def run() -> None:
        async with ProxyClient(str(tmp_path / "none.sock")) as c:
            await c.ping()
    with pytest.raises(ProxyUnavailable):
        asyncio.run(run())


def test_workers_share_listener_and_aggregate_metrics(backends: Any) -> None:
    b = backends("b")
    p = Proxy(workers=2)
    try:
        assert len(p.call("ping")["workers"]) == 2
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        busy.close()
        table = http_table({"web": {"stable": (100, [b])}})
        table["listeners"][0]["port"] = port
        p.call("set_table", table)
        for _ in range(40):  # new connections spread across workers by the kernel
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            c.request("GET", "/echo")
            assert c.getresponse().status == 200
            c.close()
        snap = p.call("metrics")
        assert snap["clusters"]["web"]["subsets"]["stable"]["endpoints"]["b"]["requests"] == 40
        assert p.call("drain", "b", 5.0) is True
    finally:
        assert p.stop() == 0


def test_crashed_worker_is_restarted_with_the_current_table(backends: Any) -> None:
    import signal as _signal

    from .conftest import wait_for
    b = backends("b")
    p = Proxy(workers=2)
    try:
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        busy.close()
        table = http_table({"web": {"stable": (100, [b])}})
        table["listeners"][0]["port"] = port
        p.call("set_table", table)
        victim = p.call("ping")["workers"][0]
        os.kill(victim, _signal.SIGKILL)
        def restarted() -> bool:
            pids = p.call("ping")["workers"]
            return victim not in pids and len(pids) == 2
        wait_for(restarted, 30, "worker restart")
        for _ in range(20):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            c.request("GET", "/echo")
            assert c.getresponse().status == 200
            c.close()
    finally:
        assert p.stop() == 0


def test_one_client_serves_metrics_while_a_drain_waits(backends: Any, proxy: Proxy) -> None:
    import threading

    b = backends("b")
    port = proxy.set_table(http_table({"web": {"stable": (100, [b])}}))["gw"]
    done: list[int] = []

    def slow() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/slow/2000")
        done.append(c.getresponse().status)

    t = threading.Thread(target=slow)
    t.start()

    async def run() -> bool:
        async with ProxyClient(proxy.control) as c:
            while (await c.metrics())["clusters"]["web"]["subsets"]["stable"]["endpoints"]["b"]["inflight"] != 1:
                await asyncio.sleep(0.01)
            drain = asyncio.ensure_future(c.drain("b", 20.0))
            for _ in range(10):  # let the drain task send its request
                await asyncio.sleep(0)
            await c.metrics()
            assert not drain.done()  # metrics was answered while the drain still waited
            return await drain

    drained = asyncio.run(run())
    t.join()
    assert drained is True and done == [200]
