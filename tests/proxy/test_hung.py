"""Hung and slow upstreams through a real proxy: per-try timeout with a second try on
another endpoint, ejection of an endpoint whose tries time out, hedging. The hung
upstream is a real backend process stopped with SIGSTOP (it accepts connections, in the
kernel's backlog, and never answers)."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from typing import Any, Iterator

import pytest

from .conftest import Backend, Proxy, http_table, wait_for

pytestmark = pytest.mark.e2e


def table(a: Backend, b: Backend, **timeouts: float) -> dict[str, Any]:
    t = http_table({"web": {"stable": (100, [a, b])}})
    t["clusters"]["web"]["timeouts"] = timeouts
    return t


def endpoint(proxy: Proxy, name: str) -> dict[str, Any]:
    return dict(proxy.call("metrics")["clusters"]["web"]["subsets"]["stable"]["endpoints"][name])


def request(port: int, method: str = "GET", path: str = "/echo",
            timeout: float = 30) -> tuple[int, str, float]:
    started = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path)
        r = c.getresponse()
        r.read()
        return r.status, r.getheader("x-backend") or "?", time.monotonic() - started
    finally:
        c.close()


@pytest.fixture
def hung_and_good(backends: Any) -> Iterator[tuple[Backend, Backend]]:
    hung, good = backends("hung"), backends("good")
    os.kill(hung.proc.pid, signal.SIGSTOP)
    yield hung, good
    os.kill(hung.proc.pid, signal.SIGCONT)


def test_a_get_the_first_endpoint_does_not_answer_is_answered_by_the_other(
        proxy: Proxy, hung_and_good: tuple[Backend, Backend]) -> None:
    hung, good = hung_and_good
    port = proxy.set_table(table(hung, good, per_try=0.3))["gw"]
    results = [request(port) for _ in range(4)]
    assert [(s, b) for s, b, _ in results] == [(200, "good")] * 4
    # Round robin sent one of the first two to the hung endpoint: it waited its per-try
    # timeout, then the other endpoint answered it.
    assert max(t for _, _, t in results) >= 0.3
    hung_stats, good_stats = endpoint(proxy, "hung"), endpoint(proxy, "good")
    assert hung_stats["timeouts"] >= 1 and good_stats["hedges"] >= 1
    assert good_stats["responses"]["2xx"] == 4


def test_an_endpoint_whose_tries_time_out_leaves_the_rotation(
        proxy: Proxy, hung_and_good: tuple[Backend, Backend]) -> None:
    hung, good = hung_and_good
    t = table(hung, good, per_try=0.2)
    t["clusters"]["web"]["outlier"] = {"consecutive_failures": 3}
    port = proxy.set_table(t)["gw"]
    statuses = []
    for _ in range(30):
        statuses.append(request(port)[0])
    assert statuses == [200] * 30
    hung_stats = endpoint(proxy, "hung")
    assert hung_stats["ejections"] == 1
    # Three timed-out tries ejected it: later requests no longer went there.
    assert hung_stats["requests"] == 3 == hung_stats["timeouts"]


def test_a_post_is_never_sent_twice(proxy: Proxy,
                                    hung_and_good: tuple[Backend, Backend]) -> None:
    hung, good = hung_and_good
    t = table(hung, good, per_try=0.2, response_header=1.5)
    port = proxy.set_table(t)["gw"]
    statuses = sorted(request(port, "POST")[0] for _ in range(2))
    assert statuses == [200, 504]  # the hung endpoint's POST waited for its answer
    assert endpoint(proxy, "good")["requests"] == 1
    assert endpoint(proxy, "good")["hedges"] == 0


def test_slow_endpoints_are_not_failed_by_the_per_try_timeout(
        proxy: Proxy, backends: Any) -> None:
    """Both endpoints take 600 ms: the second try is sent (the first keeps going), the
    first answer wins, and nobody is counted as failed or ejected."""
    a, b = backends("a"), backends("b")
    t = table(a, b, per_try=0.2)
    t["clusters"]["web"]["outlier"] = {"consecutive_failures": 1}
    port = proxy.set_table(t)["gw"]
    for _ in range(6):
        status, _, took = request(port, path="/slow/600")
        assert status == 200 and took < 1.5
    for name in ("a", "b"):
        stats = endpoint(proxy, name)
        assert stats["timeouts"] == 0 and stats["ejections"] == 0, stats
    assert endpoint(proxy, "a")["hedges"] + endpoint(proxy, "b")["hedges"] >= 1


class SilentServer:
    """Accepts connections and never answers; records when each one is closed."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.closed = 0
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._wait, args=(c,), daemon=True).start()

    def _wait(self, c: socket.socket) -> None:
        with c:
            while c.recv(65536):
                pass
        self.closed += 1


def test_hedging_answers_before_the_per_try_timeout_and_cancels_the_loser(
        proxy: Proxy, backends: Any) -> None:
    silent, good = SilentServer(), backends("good")
    t = http_table({"web": {"stable": (100, [good])}})
    t["clusters"]["web"]["subsets"]["stable"]["endpoints"].insert(
        0, {"id": "silent", "address": silent.address})
    t["clusters"]["web"]["timeouts"] = {"per_try": 5.0, "hedge": 0.1}
    port = proxy.set_table(t)["gw"]
    results = [request(port) for _ in range(2)]
    assert [(s, b) for s, b, _ in results] == [(200, "good")] * 2
    assert max(took for _, _, took in results) < 2.0  # the hedge, not the 5 s timeout
    assert endpoint(proxy, "good")["hedges"] >= 1
    # The silent endpoint's try lost: its connection was closed, not left waiting.
    wait_for(lambda: silent.accepted >= 1 and silent.closed == silent.accepted, 10,
             "the losing try's connection closed")
