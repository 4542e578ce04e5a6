"""L4 TCP listener mode through a real proxy."""
from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from .conftest import Proxy, wait_for

pytestmark = pytest.mark.e2e


class EchoServer:
    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    def _echo(self, c: socket.socket) -> None:
        with c:
            c.sendall(self.tag)
            while True:
                data = c.recv(65536)
                if not data:
                    return
                c.sendall(data)


def tcp_table(endpoints: list[dict[str, str]]) -> dict[str, Any]:
    return {"version": 1,
            "listeners": [{"name": "t", "bind": "127.0.0.1", "port": 0, "mode": "tcp", "cluster": "echo"}],
            "clusters": {"echo": {"subsets": {"stable": {"weight": 1, "endpoints": endpoints}}}}}


def roundtrip(port: int, payload: bytes) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        tag = s.recv(3)
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += s.recv(65536)
        return tag, got


def test_tcp_echo_large_payload_and_balancing(proxy: Proxy) -> None:
    e1, e2 = EchoServer(b"e1:"), EchoServer(b"e2:")
    port = proxy.set_table(tcp_table([{"id": "e1", "address": f"127.0.0.1:{e1.port}"},
                                      {"id": "e2", "address": f"127.0.0.1:{e2.port}"}]))["t"]
    payload = bytes(range(256)) * 20000  # 5 MB, exercises pause/resume
    tags = set()
    for _ in range(4):
        tag, got = roundtrip(port, payload)
        assert got == payload
        tags.add(tag)
    assert tags == {b"e1:", b"e2:"}


def test_tcp_connect_failure_retries_another_endpoint(proxy: Proxy) -> None:
    live = EchoServer(b"ok:")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    port = proxy.set_table(tcp_table([{"id": "dead", "address": f"127.0.0.1:{dead_port}"},
                                      {"id": "live", "address": f"127.0.0.1:{live.port}"}]))["t"]
    for _ in range(6):
        assert roundtrip(port, b"hello") == (b"ok:", b"hello")
    eps = proxy.call("metrics")["clusters"]["echo"]["subsets"]["stable"]["endpoints"]
    assert eps["dead"]["connect_errors"] >= 1


def _inflight(proxy: Proxy, endpoint: str) -> int:
    eps = proxy.call("metrics")["clusters"]["echo"]["subsets"]["stable"]["endpoints"]
    return int(eps[endpoint]["inflight"])


@pytest.mark.parametrize("client_closes", [True, False])
def test_tcp_connection_counts_only_while_open(proxy: Proxy, client_closes: bool) -> None:
    """A TCP endpoint's in-flight count is its open connections, so a drain of a database
    ends when its last client goes, not at the grace period (the count used to leak one
    per connection, whoever closed first)."""
    import time
    server = EchoServer(b"e1:")
    port = proxy.set_table(tcp_table([{"id": "e1", "address": f"127.0.0.1:{server.port}"}]))["t"]
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(5)]
    for c in conns:
        assert c.recv(3) == b"e1:"
    assert _inflight(proxy, "e1") == 5
    for c in conns:
        if client_closes:
            c.close()
        else:
            c.shutdown(socket.SHUT_WR)  # half-close: the echo server then closes its side
    deadline = time.monotonic() + 10
    while _inflight(proxy, "e1") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _inflight(proxy, "e1") == 0
    started = time.monotonic()
    assert proxy.call("drain", "e1", 5.0) is True
    assert time.monotonic() - started < 2.0
    for c in conns:
        c.close()


class ClosingServer(EchoServer):
    """Says its tag and closes: a server ending the session (an idle timeout, a QUIT)."""

    def _echo(self, c: socket.socket) -> None:
        with c:
            c.sendall(self.tag)


@pytest.mark.parametrize("how", ["server_closes", "server_killed"])
def test_tcp_connection_ends_when_the_upstream_ends_it(
        proxy: Proxy, backends: Any, how: str) -> None:
    """Once the replica has closed its side (or died: the kernel closes its sockets) the
    connection no longer counts toward the replica, even while an idle client (a pool)
    keeps its own end open without reading: a drain of the replica, or of the next process
    under the same id, used to wait for such connections until its grace period."""
    import time
    if how == "server_closes":
        address = f"127.0.0.1:{ClosingServer(b'e1:').port}"
    else:
        backend = backends("b1")
        address = backend.address
    port = proxy.set_table(tcp_table([{"id": "e1", "address": address}]))["t"]
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    if how == "server_killed":
        wait_for(lambda: _inflight(proxy, "e1") == 3, 10, "3 connections attached")
        backend.kill()
    wait_for(lambda: _inflight(proxy, "e1") == 0, 10, "the connections released")
    started = time.monotonic()
    assert proxy.call("drain", "e1", 30.0) is True
    assert time.monotonic() - started < 5.0  # not the 30 s bound
    for c in conns:
        c.close()
