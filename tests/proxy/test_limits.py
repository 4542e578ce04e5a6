"""Limits at the edge (mso.proxy.limits): the token bucket and the body budget on an
injected clock, the table fields, and a real proxy process refusing over real sockets
(429 with Retry-After, 413 for Content-Length and for chunked bodies, the per-client
connection limit) with the refusals in its Prometheus metrics."""
from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any

import pytest

from mso.proxy import limits
from mso.proxy.limits import Limits, RateLimiter, Refused
from mso.proxy.table import TableError, parse_table

from .conftest import Backend, Proxy, http_table, raw_request, wait_for


# --- the token bucket, on an injected clock ------------------------------------------

def test_bucket_allows_burst_then_refuses_until_refilled() -> None:
    bucket = RateLimiter(rate=2.0, burst=3)
    assert [bucket.take(b"a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(b"a", 100.0)
    assert wait == pytest.approx(0.5)  # one token at 2/s
    assert bucket.take(b"b", 100.0) == 0.0  # another client has its own bucket
    assert bucket.take(b"a", 100.25) == pytest.approx(0.25)  # half a token back: not yet
    assert bucket.take(b"a", 100.5) == 0.0  # a whole one now
    assert bucket.take(b"a", 100.5) > 0.0
    # Idle for long: refilled up to the burst, never beyond.
    assert [bucket.take(b"a", 1000.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert bucket.take(b"a", 1000.0) > 0.0


def test_slow_rate_retry_after_counts_whole_seconds() -> None:
    bucket = RateLimiter(rate=1 / 60, burst=1)  # 1/m
    assert bucket.take(b"a", 0.0) == 0.0
    assert bucket.take(b"a", 10.0) == pytest.approx(50.0)
    response = limits.too_many_requests(bucket.take(b"a", 10.5), "x")
    assert b"retry-after: 50\r\n" in response and response.startswith(b"HTTP/1.1 429 ")
    assert b"retry-after: 1\r\n" in limits.too_many_requests(0.01, "x")  # at least 1 s


def test_keys_are_bounded_full_buckets_go_first() -> None:
    bucket = RateLimiter(rate=1.0, burst=2)
    for i in range(limits.MAX_KEYS - 1):
        bucket.take(b"%d" % i, 0.0)
    bucket.take(b"busy", 0.0)
    bucket.take(b"busy", 0.0)  # empty now
    assert len(bucket.buckets) == limits.MAX_KEYS
    # One second later every other bucket is full again (1 of 2 taken, 1/s): the next
    # new key sweeps them, and the client that used its burst keeps its bucket.
    bucket.take(b"new", 1.0)
    assert set(bucket.buckets) == {b"busy", b"new"}
    assert bucket.take(b"busy", 1.0) == 0.0 and bucket.take(b"busy", 1.0) > 0.0
    # None full: the oldest half goes, so memory stays bounded.
    crowded = RateLimiter(rate=1.0, burst=2)
    for i in range(limits.MAX_KEYS + 1):
        crowded.take(b"%d" % i, 0.0)
    assert len(crowded.buckets) == limits.MAX_KEYS // 2 + 1
    assert b"0" not in crowded.buckets and b"%d" % limits.MAX_KEYS in crowded.buckets


def test_route_limits_by_header_fall_back_to_the_address() -> None:
    route = Limits().for_route("/api", "api", 1.0, 1, "X-Api-Key", -1)
    assert route is not None
    key_a = [(b"X-API-KEY", b"a")]
    assert route.admit(b"10.0.0.1", key_a, None, 0.0) == limits.NO_LIMIT
    with pytest.raises(Refused) as refused:
        route.admit(b"10.0.0.2", key_a, None, 0.0)  # same key from elsewhere: same bucket
    assert refused.value.status == 429 and b"retry-after: 1" in refused.value.response
    route.admit(b"10.0.0.1", [(b"x-api-key", b"b")], None, 0.0)  # another key
    route.admit(b"10.0.0.1", [], None, 0.0)  # no key: the address's own bucket
    with pytest.raises(Refused):
        route.admit(b"10.0.0.1", [], None, 0.0)
    assert route.rate_limited == 2


def test_body_budget_and_content_length() -> None:
    lim = Limits()
    route = lim.for_route("/up", "up", 0.0, 1, "", 100)
    assert route is not None and route.rate is None
    assert route.admit(b"p", [], b"100", 0.0) == 100
    assert route.admit(b"p", [], None, 0.0) == 100  # chunked: counted while it streams
    with pytest.raises(Refused) as refused:
        route.admit(b"p", [], b"101", 0.0)
    assert refused.value.status == 413 and b"at most 100 bytes" in refused.value.response
    assert route.over_body().status == 413
    assert route.body_too_large == 2
    assert lim.for_route("/none", "x", 0.0, 1, "", -1) is None  # no limits: nothing to ask


def test_buckets_and_counters_survive_a_new_table() -> None:
    lim = Limits()
    first = lim.for_route("/a", "a", 1.0, 1, "", -1)
    assert first is not None
    first.admit(b"p", [], None, 0.0)
    with pytest.raises(Refused):
        first.admit(b"p", [], None, 0.0)
    # The same limits in the next table (or the other gateway listener): the same object.
    assert lim.for_route("/a", "a", 1.0, 1, "", -1) is first
    changed = lim.for_route("/a", "a", 5.0, 1, "", 10)
    assert changed is not None and changed is not first and changed.rate_limited == 1
    assert lim.snapshot()["routes"]["/a"] == {"service": "a", "rate_limited": 1,
                                             "body_too_large": 0}


def test_client_connections() -> None:
    conns = limits.ClientConnections()
    assert conns.enter(b"a", 2) and conns.enter(b"a", 2)
    assert not conns.enter(b"a", 2) and conns.enter(b"b", 2)
    conns.leave(b"a")
    assert conns.enter(b"a", 2)
    for _ in range(2):
        conns.leave(b"a")
    conns.leave(b"b")
    assert conns.open == {} and conns.refused == 1


def test_merge_sums_workers() -> None:
    one = {"limits": {"routes": {"/": {"service": "w", "rate_limited": 2, "body_too_large": 1}},
                      "connections": {"refused": 1, "open": 3, "clients": 1}}}
    merged = limits.merge([one, one, {}])
    assert merged["routes"]["/"]["rate_limited"] == 4
    assert merged["connections"] == {"refused": 2, "open": 6, "clients": 2}


# --- the table ---------------------------------------------------------------------------

def _table(route: dict[str, Any], **listener: Any) -> dict[str, Any]:
    return {"version": 1, "clusters": {"c": {"subsets": {}}}, "listeners": [
        {"name": "gw", "port": 0, "routes": [{"cluster": "c", **route}], **listener}]}


def test_table_fields() -> None:
    table = parse_table(_table({"rate_limit": {"rate": 2.5, "burst": 4, "header": "X-Key"},
                                "max_body": 10}, max_client_connections=3))
    listener = table.listeners[0]
    route = listener.routes[0]
    assert route.rate_limit is not None and route.rate_limit.header == "X-Key"
    assert (route.rate_limit.rate, route.rate_limit.burst, route.max_body) == (2.5, 4, 10)
    assert listener.max_client_connections == 3
    plain = parse_table(_table({})).listeners[0]
    assert plain.routes[0].rate_limit is None and plain.routes[0].max_body == -1
    assert plain.max_client_connections == 0


@pytest.mark.parametrize(("route", "listener", "field"), [
    ({"rate_limit": {"burst": 1}}, {}, "rate_limit: missing required field 'rate'"),
    ({"rate_limit": {"rate": 0}}, {}, "rate_limit.rate"),
    ({"rate_limit": {"rate": 1, "burst": 0}}, {}, "rate_limit.burst"),
    ({"rate_limit": {"rate": 1, "header": "a b"}}, {}, "rate_limit.header"),
    ({"max_body": "1k"}, {}, "max_body"),
    ({}, {"max_client_connections": -1}, "max_client_connections"),
])
def test_table_refuses(route: dict[str, Any], listener: dict[str, Any], field: str) -> None:
    with pytest.raises(TableError, match=field.replace(".", r"\.")):
        parse_table(_table(route, **listener))


# --- a real proxy over real sockets ----------------------------------------------------

def _get(port: int, path: str, headers: bytes = b"") -> bytes:
    return raw_request(port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n"
                       % (path.encode(), headers))


def test_limits_through_a_real_proxy(proxy: Proxy, backends: Any) -> None:
    b: Backend = backends("b")
    table = http_table({"web": {"stable": (100, [b])}}, routes=[
        {"path": "/limited", "cluster": "web",
         "rate_limit": {"rate": 1 / 60, "burst": 2, "header": "X-Api-Key"}},
        {"path": "/upload", "cluster": "web", "max_body": 1000},
        {"path": "/", "cluster": "web"},
    ], max_client_connections=3, extra_listeners=[
        {"name": "metrics", "bind": "127.0.0.1", "port": 0, "mode": "metrics"}])
    ports = proxy.set_table(table)
    gw = ports["gw"]

    # Rate: two per key, then 429 with Retry-After (1/m: about a minute), per key.
    for _ in range(2):
        assert _get(gw, "/limited/x", b"X-Api-Key: k1\r\n").startswith(b"HTTP/1.1 200")
    refused = _get(gw, "/limited/x", b"X-Api-Key: k1\r\n")
    assert refused.startswith(b"HTTP/1.1 429 ")
    retry = int(refused.split(b"retry-after: ")[1].split(b"\r\n")[0])
    assert 50 <= retry <= 60
    assert _get(gw, "/limited/x", b"X-Api-Key: k2\r\n").startswith(b"HTTP/1.1 200")
    assert _get(gw, "/", b"X-Api-Key: k1\r\n").startswith(b"HTTP/1.1 200")  # other route
    # Pipelined: the refused request is answered after the ones before it, in order.
    one = b"GET /limited HTTP/1.1\r\nHost: x\r\nX-Api-Key: k3\r\n\r\n"
    answers = raw_request(gw, one * 3)
    assert answers.count(b"HTTP/1.1 200") == 2 and answers.rfind(b"HTTP/1.1 200") < \
        answers.find(b"HTTP/1.1 429 ") and b"retry-after: " in answers, answers
    # A new table (as every readiness change pushes) does not refill the bucket.
    proxy.set_table({**table, "version": 2})
    assert _get(gw, "/limited/x", b"X-Api-Key: k1\r\n").startswith(b"HTTP/1.1 429 ")

    # Body: Content-Length over the limit is refused before the upstream is asked ...
    big = raw_request(gw, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 413 ")
    ok = raw_request(gw, b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                         b"Content-Length: 1000\r\n\r\n" + b"y" * 1000)
    assert ok.startswith(b"HTTP/1.1 200") and b'"body_len": 1000' in ok
    # ... and a chunked one as soon as it goes over, while the client is still sending.
    with socket.create_connection(("127.0.0.1", gw), timeout=10) as s:
        s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"258\r\n" + b"y" * 600 + b"\r\n" + b"258\r\n" + b"y" * 600 + b"\r\n")
        answer = s.recv(4096)  # no last chunk sent: the 413 cannot wait for the end
        assert answer.startswith(b"HTTP/1.1 413 "), answer
    small = raw_request(gw, b"POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n"
                            b"1f4\r\n" + b"y" * 500 + b"\r\n0\r\n\r\n")
    assert small.startswith(b"HTTP/1.1 200") and b'"body_len": 500' in small

    # Connections: three open per address; a fourth is answered 429 and closed.
    held = [socket.create_connection(("127.0.0.1", gw), timeout=10) for _ in range(3)]
    try:
        wait_for(lambda: _metric(ports["metrics"], "mso_proxy_limited_clients") == 1.0,
                 what="the three connections counted")
        over = raw_request(gw, b"")
        assert over.startswith(b"HTTP/1.1 429 ") and b"too many connections" in over
        held[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200")  # the held ones still serve
        held.pop().close()
        # One closed: a new one is let in (once the proxy saw the close).
        wait_for(lambda: _get(gw, "/").startswith(b"HTTP/1.1 200"), what="a free slot")
    finally:
        for s in held:
            s.close()

    text = _metrics(ports["metrics"])
    assert 'mso_proxy_rate_limited_total{route="/limited",service="web"} 3.0' in text
    assert 'mso_proxy_body_too_large_total{route="/upload",service="web"} 2.0' in text
    assert _metric(ports["metrics"], "mso_proxy_connections_refused_total") >= 1.0
    snap = proxy.call("metrics")
    assert snap["limits"]["routes"]["/limited"]["rate_limited"] == 3


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())


def _metric(port: int, name: str) -> float:
    for line in _metrics(port).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def test_limits_per_worker_are_summed(backends: Any) -> None:
    """With --workers 2 the supervisor's metrics sum each worker's refusals."""
    p = Proxy(workers=2)
    try:
        b: Backend = backends("b")
        ports = p.set_table(http_table({"web": {"stable": (100, [b])}}, routes=[
            {"path": "/", "cluster": "web", "max_body": 1}]))
        deadline = time.monotonic() + 20
        sent = 0
        while sent < 6 and time.monotonic() < deadline:
            if raw_request(ports["gw"], b"POST / HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Length: 2\r\n\r\nzz").startswith(b"HTTP/1.1 413"):
                sent += 1
        assert p.call("metrics")["limits"]["routes"]["/"]["body_too_large"] == 6
    finally:
        p.stop()
