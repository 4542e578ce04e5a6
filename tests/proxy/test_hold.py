"""Scale to zero in a real proxy process: requests to a cluster with `hold` and no endpoint
wait (bodies too) until a table gives it one, in order; the `held` long poll answers as
soon as one is parked; past the queue's bound or the timeout: 503 with Retry-After."""
from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from typing import Any, Callable

import pytest

from mso.proxy.client import ProxyClient

from .conftest import Backend, Proxy, http_table, wait_for

pytestmark = pytest.mark.e2e


def _table(backends: list[Backend], hold: dict[str, Any] | None, version: int) -> dict[str, Any]:
    table = http_table({"web": {"stable": (100, backends)}}, version=version)
    if hold is not None:
        table["clusters"]["web"]["hold"] = hold
    return table


def _request(port: int, method: str = "GET", body: bytes | None = None
             ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, "/echo", body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _in_threads(n: int, call: Callable[[], Any]) -> tuple[list[Any], list[threading.Thread]]:
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(call())) for _ in range(n)]
    for t in threads:
        t.start()
    return results, threads


def _left_waiting(port: int) -> None:
    """A request left waiting until the proxy stops (and closes it)."""
    try:
        _request(port)
    except OSError:
        pass


def _held(proxy: Proxy) -> dict[str, int]:
    report: dict[str, int] = proxy.call("held")["held"]
    return report


def test_requests_wait_at_zero_and_go_to_the_first_endpoint(
        proxy: Proxy, backends: Callable[[str], Backend]) -> None:
    port = proxy.set_table(_table([], {"queue": 100, "timeout": 20}, 1))["gw"]
    first = proxy.call("held", -1, 0.0)
    results, threads = _in_threads(
        20, lambda: _request(port, "POST", b"x" * 100_000))
    more, more_threads = _in_threads(30, lambda: _request(port))
    wait_for(lambda: _held(proxy).get("web") == 50, 20, "50 held requests")
    report = proxy.call("held", first["seq"], 0.0)
    assert report["seq"] == first["seq"] + 50
    b = backends("b1")
    proxy.set_table(_table([b], {"queue": 100, "timeout": 20}, 2))
    for t in threads + more_threads:
        t.join(30)
    assert [r[0] for r in results + more] == [200] * 50
    bodies = [json.loads(r[2]) for r in results]
    assert all(body["body_len"] == 100_000 for body in bodies)  # the body waited too
    after = proxy.call("held")
    assert after["held"] == {} and after["released"] >= 50 and after["refused"] == 0


def test_the_long_poll_answers_as_soon_as_a_request_is_parked(proxy: Proxy) -> None:
    port = proxy.set_table(_table([], {"queue": 10, "timeout": 20}, 1))["gw"]
    seq = proxy.call("held")["seq"]

    async def poll() -> tuple[float, dict[str, Any]]:
        async with ProxyClient(proxy.control) as client:
            began = time.monotonic()
            task = asyncio.create_task(client.held(seq, 20.0))
            await asyncio.sleep(0)
            threading.Thread(target=_left_waiting, args=(port,), daemon=True).start()
            report = await task
            return time.monotonic() - began, report

    took, report = asyncio.run(poll())
    assert report["seq"] == seq + 1 and report["held"] == {"web": 1}
    assert took < 5.0  # not the 20 s wait
    # A `since` the proxy has not reached (it restarted and counts from 0): at once.
    assert proxy.call("held", seq + 1000, 20.0)["seq"] == seq + 1


def test_past_the_queue_or_the_timeout_503_with_retry_after(proxy: Proxy) -> None:
    port = proxy.set_table(_table([], {"queue": 2, "timeout": 1.0}, 1))["gw"]
    results, threads = _in_threads(2, lambda: _request(port))
    wait_for(lambda: _held(proxy).get("web") == 2, 20, "2 held requests")
    status, headers, body = _request(port)  # the third: the queue is full
    assert status == 503 and headers["retry-after"] == "1"
    assert b"web: it is starting from zero replicas" in body
    for t in threads:
        t.join(30)
    for status, headers, body in results:  # nothing came within 1 s
        assert status == 503 and headers["retry-after"] == "5"
        assert b"no replica was ready within 1s" in body
    report = proxy.call("held")
    assert report["refused"] == 3 and report["held"] == {}


def test_a_cluster_without_hold_still_fails_at_once(
        proxy: Proxy, backends: Callable[[str], Backend]) -> None:
    port = proxy.set_table(_table([], None, 1))["gw"]
    began = time.monotonic()
    status, headers, _ = _request(port)
    assert status == 503 and time.monotonic() - began < 5.0
    assert proxy.call("held")["seq"] == 0


def test_a_table_that_drops_hold_answers_the_waiting_requests(proxy: Proxy) -> None:
    port = proxy.set_table(_table([], {"queue": 5, "timeout": 20}, 1))["gw"]
    results, threads = _in_threads(1, lambda: _request(port))
    wait_for(lambda: _held(proxy).get("web") == 1, 20, "a held request")
    proxy.set_table(_table([], None, 2))
    for t in threads:
        t.join(30)
    assert results[0][0] == 503 and b"no longer scales to zero" in results[0][2]


def test_a_worker_pool_reports_the_requests_held_in_any_worker() -> None:
    pool = Proxy(workers=2)
    try:
        port = pool.set_table(_table([], {"queue": 10, "timeout": 20}, 1))["gw"]
        seq = pool.call("held")["seq"]
        results, threads = _in_threads(4, lambda: _request(port))
        report = pool.call("held", seq, 20.0)  # answered as soon as one is parked
        assert report["seq"] > seq
        wait_for(lambda: _held(pool).get("web") == 4, 20, "4 held requests in the pool")
        pool.set_table(_table([], None, 2))
        for t in threads:
            t.join(30)
        assert [r[0] for r in results] == [503] * 4
    finally:
        pool.stop()
