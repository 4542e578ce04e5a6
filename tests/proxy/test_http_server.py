"""HTTP proxying through a real proxy subprocess to real backend processes."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
from typing import Any, Iterator

import pytest

from .conftest import Backend, Proxy, http_table, raw_request

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, Any]]:
    b1, b2 = Backend("b1"), Backend("b2")
    p = Proxy()
    ports = p.set_table(http_table({"web": {"stable": (100, [b1]), "canary": (0, [b2])}}))
    yield {"proxy": p, "port": ports["gw"], "b1": b1, "b2": b2}
    p.stop()
    b1.kill()
    b2.kill()


def conn(env: dict[str, Any]) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", env["port"], timeout=30)


def get_json(c: http.client.HTTPConnection, path: str, **kw: Any) -> tuple[int, Any]:
    c.request("GET", path, **kw)
    r = c.getresponse()
    return r.status, json.loads(r.read())


def test_keepalive_connection_serves_many_requests(env: dict[str, Any]) -> None:
    c = conn(env)
    c.request("GET", "/echo")
    r = c.getresponse()
    r.read()
    sock = c.sock
    for _ in range(50):
        status, body = get_json(c, "/echo")
        assert status == 200 and body["backend"] == "b1"
    assert c.sock is sock  # same TCP connection the whole time


def test_forwarded_headers_are_added(env: dict[str, Any]) -> None:
    _, body = get_json(conn(env), "/echo", headers={"X-Forwarded-For": "10.0.0.1"})
    headers = {k.lower(): v for k, v in body["headers"]}
    assert headers["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"


def test_hop_by_hop_headers_are_stripped(env: dict[str, Any]) -> None:
    _, body = get_json(conn(env), "/echo", headers={
        "Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "timeout=5",
        "Proxy-Connection": "x", "TE": "trailers", "Trailer": "X-T", "X-Kept": "yes",
    })
    names = {k.lower() for k, _ in body["headers"]}
    assert "x-kept" in names
    assert not names & {"connection", "x-secret", "keep-alive", "proxy-connection", "te", "trailer"}


def test_traceparent_created_when_missing(env: dict[str, Any]) -> None:
    _, body = get_json(conn(env), "/echo")
    tp = dict((k.lower(), v) for k, v in body["headers"])["traceparent"]
    version, trace_id, span_id, flags = tp.split("-")
    assert (version, flags) == ("00", "01")
    assert len(trace_id) == 32 and len(span_id) == 16 and int(trace_id, 16) != 0


def test_traceparent_propagated_when_present(env: dict[str, Any]) -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    _, body = get_json(conn(env), "/echo", headers={"traceparent": tp})
    assert dict((k.lower(), v) for k, v in body["headers"])["traceparent"] == tp


def test_chunked_request_body_reaches_backend_intact(env: dict[str, Any]) -> None:
    payload = os.urandom(300_000)
    c = conn(env)
    c.request("POST", "/upload", body=iter([payload[:1000], payload[1000:]]),
              encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    body = json.loads(c.getresponse().read())
    assert body["body_len"] == len(payload)
    assert body["body_sha256"] == hashlib.sha256(payload).hexdigest()


def test_chunked_response_is_reframed_for_the_client(env: dict[str, Any]) -> None:
    c = conn(env)
    c.request("GET", "/bytes/200000?chunked")
    r = c.getresponse()
    assert r.getheader("transfer-encoding") == "chunked"
    assert r.read() == b"x" * 200000


def test_eof_delimited_response_becomes_chunked(env: dict[str, Any]) -> None:
    c = conn(env)
    c.request("GET", "/eof/1000")
    r = c.getresponse()
    assert r.read() == b"x" * 1000
    assert r.getheader("transfer-encoding") == "chunked"


def test_head_response_has_no_body_and_connection_is_reusable(env: dict[str, Any]) -> None:
    c = conn(env)
    for _ in range(3):
        c.request("HEAD", "/bytes/5000")
        r = c.getresponse()
        assert r.status == 200 and r.getheader("content-length") == "5000"
        assert r.read() == b""
    status, _ = get_json(c, "/echo")
    assert status == 200


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_statuses_pass_through(env: dict[str, Any], status: int) -> None:
    c = conn(env)
    c.request("GET", f"/status/{status}")
    r = c.getresponse()
    assert r.status == status and r.read() == b""
    assert get_json(c, "/echo")[0] == 200


def test_expect_100_continue_is_forwarded(env: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", env["port"]), timeout=20) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        s.sendall(b"hello")
        data = b""
        while b"body_len" not in data:
            data += s.recv(65536)
        assert b'"body_len": 5' in data


def test_http10_client_gets_close_delimited_body(env: dict[str, Any]) -> None:
    data = raw_request(env["port"], b"GET /bytes/10?chunked HTTP/1.0\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"chunked" not in head.lower() and body == b"x" * 10


def test_websocket_upgrade_echoes_both_ways(env: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", env["port"]), timeout=20) as s:
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(4096)
        assert data.startswith(b"HTTP/1.1 101")
        for msg in (b"ping-1", b"x" * 100_000):
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += s.recv(65536)
            assert got == msg


def test_override_header_pins_to_subset(env: dict[str, Any]) -> None:
    c = conn(env)
    assert get_json(c, "/echo", headers={"x-mso-route": "canary"})[1]["backend"] == "b2"
    assert get_json(c, "/echo", headers={"Cookie": "a=1; mso-route=canary"})[1]["backend"] == "b2"
    assert get_json(c, "/echo", headers={"x-mso-route": "nope"})[1]["backend"] == "b1"
    assert get_json(c, "/echo")[1]["backend"] == "b1"


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_50mb_upload_streams_without_buffering(env: dict[str, Any]) -> None:
    size = 50 * 1024 * 1024
    block = os.urandom(1024 * 1024)
    sha = hashlib.sha256()
    for _ in range(50):
        sha.update(block)
    before = _rss_kb(env["proxy"].proc.pid)
    c = conn(env)
    c.request("POST", "/upload", body=iter([block] * 50), headers={"Content-Length": str(size)})
    body = json.loads(c.getresponse().read())
    assert body["body_len"] == size and body["body_sha256"] == sha.hexdigest()
    assert _rss_kb(env["proxy"].proc.pid) - before < 20 * 1024


def test_50mb_download_streams_without_buffering(env: dict[str, Any]) -> None:
    before = _rss_kb(env["proxy"].proc.pid)
    c = conn(env)
    c.request("GET", f"/bytes/{50 * 1024 * 1024}")
    r = c.getresponse()
    total = 0
    while True:
        piece = r.read(1024 * 1024)
        if not piece:
            break
        total += len(piece)
    assert total == 50 * 1024 * 1024
    assert _rss_kb(env["proxy"].proc.pid) - before < 20 * 1024


def test_unmatched_route_is_404_and_no_endpoints_is_503(backends: Any, proxy: Proxy) -> None:
    b = backends("b")
    table = http_table(
        {"api": {"stable": (100, [b])}, "empty": {"stable": (100, [])}},
        routes=[{"host": "api.example", "path": "/api", "cluster": "api"},
                {"host": None, "path": "/empty", "cluster": "empty"}],
    )
    port = proxy.set_table(table)["gw"]
    ok = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    ok.request("GET", "/api/x", headers={"Host": "API.example:8080"})
    assert ok.getresponse().status == 200
    for host, path, status in [("other", "/api/x", 404), ("api.example", "/apix", 404),
                               ("x", "/empty/1", 503)]:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        c.request("GET", path, headers={"Host": host})
        assert c.getresponse().status == status, (host, path)


def test_proxy_exits_zero_on_sigterm() -> None:
    p = Proxy()
    assert p.stop() == 0


def test_pipelined_requests_are_answered_in_order(env: dict[str, Any]) -> None:
    reqs = b"".join(b"GET /echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(5))
    data = raw_request(env["port"], reqs + b"GET /echo?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    paths = [json.loads(part.split(b"\r\n\r\n", 1)[1])["path"]
             for part in data.split(b"HTTP/1.1 200 OK")[1:]]
    assert paths == [f"/echo?n={i}" for i in range(5)] + ["/echo?n=last"]


def test_http10_keepalive_client_is_kept_alive(env: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", env["port"]), timeout=20) as s:
        for _ in range(3):
            s.sendall(b"GET /status/200 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(4096)
            assert data.startswith(b"HTTP/1.1 200") and b"connection: keep-alive" in data.lower()


def test_sigterm_lets_inflight_requests_finish(backends: Any) -> None:
    import threading
    b = backends("b")
    p = Proxy()
    port = p.set_table(http_table({"web": {"stable": (100, [b])}}))["gw"]
    result: list[int] = []

    def slow() -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("GET", "/slow/1500")
        result.append(c.getresponse().status)

    t = threading.Thread(target=slow)
    t.start()
    from .conftest import wait_for
    wait_for(lambda: p.call("metrics")["clusters"]["web"]["subsets"]["stable"]["endpoints"]["b"]
             ["inflight"] == 1, what="request in flight")
    assert p.stop() == 0
    t.join()
    assert result == [200]


def test_new_traceparents_are_well_formed_and_distinct_across_batches() -> None:
    import re

    from mso.proxy.http_server import new_traceparent

    ids = [new_traceparent() for _ in range(600)]  # more than two batches of 256
    assert all(re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-01", t) for t in ids)
    assert len(set(ids)) == len(ids)
