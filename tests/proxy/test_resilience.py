"""Resilience through real processes: weighted split, drain, retries, stale pools, kills."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from .conftest import Backend, Proxy, http_table, wait_for

pytestmark = pytest.mark.e2e


def get(port: int, path: str = "/echo", conn: http.client.HTTPConnection | None = None,
        **kw: Any) -> tuple[int, dict[str, Any] | None]:
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path, **kw)
    r = c.getresponse()
    body = r.read()
    try:
        return r.status, json.loads(body)
    except ValueError:
        return r.status, None


def test_weighted_split_through_real_http_within_one_percent(backends: Any, proxy: Proxy) -> None:
    stable, canary = backends("stable-1"), backends("canary-1")
    port = proxy.set_table(http_table({"web": {"stable": (90, [stable]), "canary": (10, [canary])}}))["gw"]
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(4)]
    seen: Counter[str] = Counter()

    def worker(c: http.client.HTTPConnection) -> Counter[str]:
        local: Counter[str] = Counter()
        for _ in range(2500):
            c.request("GET", "/status/200")
            r = c.getresponse()
            r.read()
            local[r.getheader("x-backend") or "?"] += 1
        return local

    with ThreadPoolExecutor(4) as pool:
        for part in pool.map(worker, conns):
            seen.update(part)
    assert seen["stable-1"] + seen["canary-1"] == 10_000
    assert abs(seen["canary-1"] - 1000) <= 100

    snap = proxy.call("metrics")["clusters"]["web"]["subsets"]
    assert snap["canary"]["endpoints"]["canary-1"]["requests"] == seen["canary-1"]
    assert snap["stable"]["endpoints"]["stable-1"]["responses"]["2xx"] == seen["stable-1"]
    assert sum(snap["stable"]["endpoints"]["stable-1"]["latency_counts"]) == seen["stable-1"]


def test_weight_change_applies_to_the_next_requests(backends: Any, proxy: Proxy) -> None:
    a, b = backends("a"), backends("b")
    port = proxy.set_table(http_table({"web": {"stable": (100, [a]), "canary": (0, [b])}}))["gw"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    assert {get(port, conn=c)[1]["backend"] for _ in range(20)} == {"a"}  # type: ignore[index]
    proxy.set_table(http_table({"web": {"stable": (0, [a]), "canary": (100, [b])}}, version=2))
    assert {get(port, conn=c)[1]["backend"] for _ in range(20)} == {"b"}  # type: ignore[index]


def test_drain_waits_for_inflight_and_loses_no_requests(backends: Any, proxy: Proxy) -> None:
    a, b = backends("a"), backends("b")
    port = proxy.set_table(http_table({"web": {"stable": (100, [a, b])}}))["gw"]
    results: list[int] = []
    stop = threading.Event()

    def load() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            results.append(get(port, "/slow/50", conn=c)[0])

    threads = [threading.Thread(target=load) for _ in range(4)]
    slow = ThreadPoolExecutor(2)
    slow_a = [slow.submit(get, port, "/slow/1500") for _ in range(2)]
    for t in threads:
        t.start()
    wait_for(lambda: len(results) > 20, what="load")
    started = time.monotonic()
    assert proxy.call("drain", "a", 30.0) is True
    elapsed = time.monotonic() - started
    snap = proxy.call("metrics")["clusters"]["web"]["subsets"]["stable"]["endpoints"]
    assert snap["a"]["inflight"] == 0
    a.kill()  # stopped only after the drain returned
    wait_for(lambda: len(results) > 200, what="more load after drain")
    stop.set()
    for t in threads:
        t.join()
    assert [f.result()[0] for f in slow_a] == [200, 200]
    assert set(results) == {200}
    assert elapsed < 10


def test_drain_times_out_with_inflight_count(backends: Any, proxy: Proxy) -> None:
    a = backends("a")
    port = proxy.set_table(http_table({"web": {"stable": (100, [a])}}))["gw"]
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(get, port, "/slow/3000")
        wait_for(lambda: proxy.call("metrics")["clusters"]["web"]["subsets"]["stable"]
                 ["endpoints"]["a"]["inflight"] == 1, what="inflight request")
        assert proxy.call("drain", "a", 0.2) is False
        assert fut.result()[0] == 200


def test_removed_endpoint_finishes_inflight_requests(backends: Any, proxy: Proxy) -> None:
    a, b = backends("a"), backends("b")
    port = proxy.set_table(http_table({"web": {"stable": (100, [a])}}))["gw"]
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(get, port, "/slow/1000")
        wait_for(lambda: proxy.call("metrics")["clusters"]["web"]["subsets"]["stable"]
                 ["endpoints"]["a"]["inflight"] == 1, what="inflight request")
        proxy.set_table(http_table({"web": {"stable": (100, [b])}}, version=2))
        assert get(port)[1]["backend"] == "b"  # type: ignore[index]
        assert fut.result()[0] == 200


def test_connect_failure_is_retried_on_another_endpoint(backends: Any, proxy: Proxy) -> None:
    live = backends("live")
    dead = Backend("dead")
    dead.kill()
    port = proxy.set_table(http_table({"web": {"stable": (100, [dead, live])}}))["gw"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    assert all(get(port, conn=c)[0] == 200 for _ in range(40))
    eps = proxy.call("metrics")["clusters"]["web"]["subsets"]["stable"]["endpoints"]
    assert eps["dead"]["connect_errors"] >= 1
    assert eps["live"]["retries"] >= 1


def test_response_header_timeout_gives_504(backends: Any, proxy: Proxy) -> None:
    a = backends("a")
    table = http_table({"web": {"stable": (100, [a])}})
    table["clusters"]["web"]["timeouts"] = {"response_header": 0.5}
    port = proxy.set_table(table)["gw"]
    started = time.monotonic()
    assert get(port, "/slow/5000")[0] == 504
    assert time.monotonic() - started < 4


class ClosingBackend:
    """Answers one keep-alive-looking response per connection, then closes it.

    Models an upstream whose idle timeout fires just as the proxy reuses a
    pooled connection.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    @staticmethod
    def _one(c: socket.socket) -> None:
        with c:
            data = b""
            while b"\r\n\r\n" not in data:
                piece = c.recv(65536)
                if not piece:
                    return
                data += piece
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            # Close without "Connection: close": the proxy pools a connection that dies.


def test_stale_pooled_connections_never_fail_requests(proxy: Proxy) -> None:
    up = ClosingBackend()
    table = http_table({"web": {"stable": (100, [])}})
    table["clusters"]["web"]["subsets"]["stable"]["endpoints"] = [
        {"id": "closing", "address": f"127.0.0.1:{up.port}"}]
    port = proxy.set_table(table)["gw"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses = Counter(get(port, "/", conn=c)[0] for _ in range(300))
    assert statuses == Counter({200: 300})
    for _ in range(50):  # and POSTs with small bodies too
        c.request("POST", "/", body=b"abc")
        r = c.getresponse()
        r.read()
        assert r.status == 200
    up.sock.close()


@pytest.mark.slow
def test_zero_failed_gets_while_backends_are_sigkilled(proxy: Proxy) -> None:
    bs = [Backend(f"k{i}") for i in range(3)]
    try:
        port = proxy.set_table(http_table({"web": {"stable": (100, bs)}}))["gw"]
        failures: list[str] = []
        ok = Counter[int]()
        stop = threading.Event()

        def load() -> None:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            next_at = time.monotonic()
            while not stop.is_set():
                next_at += 1 / 125  # 4 threads ≈ 500 req/s
                try:
                    status = get(port, "/echo", conn=c)[0]
                    ok[status] += 1
                    if status != 200:
                        failures.append(str(status))
                except (OSError, http.client.HTTPException) as exc:
                    failures.append(repr(exc))
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                delay = next_at - time.monotonic()
                if delay > 0:
                    stop.wait(delay)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        end = time.monotonic() + 30
        i = 0
        while time.monotonic() < end:
            stop.wait(2.0)
            bs[i % 3].restart()  # SIGKILL, then start again on the same port
            i += 1
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert ok[200] > 30 * 150, ok  # ~500 req/s offered; allow for a loaded machine
    finally:
        for b in bs:
            b.kill()


class ResettingBackend(ClosingBackend):
    """Reads the request, then closes without answering (a crash mid-request)."""

    @staticmethod
    def _one(c: socket.socket) -> None:
        with c:
            read_head(c)


def read_head(c: socket.socket) -> bool:
    """Read a request head; False if the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = c.recv(65536)
        if not piece:
            return False
        data += piece
    return True


def test_only_idempotent_requests_are_retried_after_a_reset(backends: Any, proxy: Proxy) -> None:
    good = backends("good")
    bad = ResettingBackend()
    table = http_table({"web": {"stable": (100, [good])}})
    table["clusters"]["web"]["subsets"]["stable"]["endpoints"].insert(
        0, {"id": "bad", "address": f"127.0.0.1:{bad.port}"})
    table["clusters"]["web"]["outlier"] = {"consecutive_failures": 1000}
    port = proxy.set_table(table)["gw"]
    gets = [get(port)[0] for _ in range(10)]
    assert gets == [200] * 10
    posts = Counter()
    for _ in range(10):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/echo", body=b"x")
        posts[c.getresponse().status] += 1
    assert posts == Counter({200: 5, 502: 5})  # round robin: every other POST hits "bad"
    bad.sock.close()


def test_sampled_access_log_writes_json_lines(backends: Any) -> None:
    b = backends("b")
    p = Proxy(extra=["--access-log-sample", "1.0"])
    try:
        port = p.set_table(http_table({"web": {"stable": (100, [b])}}))["gw"]
        for _ in range(3):
            assert get(port)[0] == 200
        lines = wait_for(lambda: [ln for ln in p.log().splitlines() if ln.startswith("{")],
                         what="access log lines")
        entry = json.loads(lines[0])
        assert entry["status"] == 200 and entry["cluster"] == "web" and entry["endpoint"] == "b"
    finally:
        p.stop()


class EarlyResponder(ClosingBackend):
    """Answers 413 as soon as the request head arrives, without reading the body."""

    @staticmethod
    def _one(c: socket.socket) -> None:
        with c:
            data = b""
            while b"\r\n\r\n" not in data:
                piece = c.recv(65536)
                if not piece:
                    return
                data += piece
            c.sendall(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            c.shutdown(socket.SHUT_WR)
            while c.recv(65536):  # lingering close, like nginx: no RST that could eat the 413
                pass


def test_early_response_to_large_upload_keeps_client_connection_usable(
    backends: Any, proxy: Proxy
) -> None:
    normal = backends("normal")
    early = EarlyResponder()
    table = http_table({"web": {"stable": (100, [normal])}, "early": {"stable": (100, [])}},
                       routes=[{"host": None, "path": "/early", "cluster": "early"},
                               {"host": None, "path": "/", "cluster": "web"}])
    table["clusters"]["early"]["subsets"]["stable"]["endpoints"] = [
        {"id": "early", "address": f"127.0.0.1:{early.port}"}]
    port = proxy.set_table(table)["gw"]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/early", body=b"x" * (20 * 1024 * 1024))
    r = c.getresponse()
    r.read()
    assert r.status == 413
    assert get(port, conn=c)[0] == 200  # same client connection still works
    early.sock.close()


class TruncatingBackend(ClosingBackend):
    """Sends the response head and half of the body, then dies (SIGKILL mid-response)."""

    @staticmethod
    def _one(c: socket.socket) -> None:
        with c:
            if read_head(c):
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 500)


def test_upstream_dying_mid_response_is_retried_for_idempotent_requests(
        backends: Any, proxy: Proxy) -> None:
    good = backends("good")
    bad = TruncatingBackend()
    table = http_table({"web": {"stable": (100, [good])}})
    table["clusters"]["web"]["subsets"]["stable"]["endpoints"].insert(
        0, {"id": "bad", "address": f"127.0.0.1:{bad.port}"})
    table["clusters"]["web"]["outlier"] = {"consecutive_failures": 1000}
    port = proxy.set_table(table)["gw"]
    # Every GET gets a whole response from "good"; none sees the truncated one.
    for _ in range(10):
        status, body = get(port)
        assert status == 200 and body is not None
    # A POST can't be replayed: its truncated response ends in a closed connection.
    outcomes = Counter()
    for _ in range(4):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            c.request("POST", "/echo", body=b"x")
            r = c.getresponse()
            r.read()
            outcomes[r.status] += 1
        except (http.client.IncompleteRead, ConnectionError):
            outcomes["cut"] += 1
    assert outcomes["cut"] == 2 and outcomes[200] == 2
    bad.sock.close()
