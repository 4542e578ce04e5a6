"""RFC 9112 request/response safety: a corpus of malformed and smuggling messages
sent over raw sockets to a running proxy, plus property tests over framing."""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mso.proxy import safety

from .conftest import Backend, Proxy, http_table, raw_request

pytestmark = pytest.mark.e2e

H = b"Host: x\r\n"
CORPUS: list[tuple[str, bytes, int]] = [
    ("cl_and_te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_and_cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
    ("differing_cl", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    ("cl_list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3, 4\r\n\r\nabcd", 400),
    ("cl_not_digits", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    ("cl_plus_sign", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +3\r\n\r\nabc", 400),
    ("cl_negative", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", 400),
    ("te_obfuscated_prefix", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("te_vertical_tab", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n", 400),
    ("te_quoted", b'POST / HTTP/1.1\r\n' + H + b'Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n', 400),
    ("te_chunked_not_last", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te_chunked_twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_two_headers", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_unknown_coding", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te_gzip_chunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    ("te_space_before_colon", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("obs_fold", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", 400),
    ("bad_chunk_size", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    ("chunk_size_overflow", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n", 400),
    ("chunk_missing_crlf", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n", 400),
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n", 400),
    ("cr_in_value", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n", 400),
    ("bare_lf_line", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\nX-B: b\r\n\r\n", 400),
    ("missing_host_11", b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
    ("duplicate_host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("duplicate_host_http10", b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("too_many_headers", b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(120)) + b"\r\n", 431),
    ("header_section_too_large", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    ("uri_too_long", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("invalid_method", b"G@T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("lowercase_method", b"get / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("http_2_0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("http_1_2", b"GET / HTTP/1.2\r\n" + H + b"\r\n", 505),
    ("http_2_0_keep_alive", b"GET / HTTP/2.0\r\n" + H + b"Connection: keep-alive\r\n\r\n", 505),
    ("http_0_9", b"GET / HTTP/0.9\r\n" + H + b"\r\n", 505),
    ("http_0_9_keep_alive", b"GET / HTTP/0.9\r\n" + H + b"Connection: keep-alive\r\n\r\n", 505),
    ("bad_version", b"GET / HTTX/1.1\r\n" + H + b"\r\n", 400),
    ("connect_method", b"CONNECT x:443 HTTP/1.1\r\n" + H + b"\r\n", 405),
    ("space_in_uri", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("leading_space_header", b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),
]


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, Any]]:
    b = Backend("b1")
    p = Proxy()
    ports = p.set_table(http_table({"web": {"stable": (100, [b])}}, header_timeout=1.0))
    yield {"proxy": p, "port": ports["gw"], "backend": b}
    p.stop()
    b.kill()


def status_of(resp: bytes) -> int:
    assert resp.startswith(b"HTTP/1.1 "), resp[:200]
    return int(resp[9:12])


@pytest.mark.parametrize("name,request_bytes,expected", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_request_is_rejected_and_connection_closed(
    env: dict[str, Any], name: str, request_bytes: bytes, expected: int
) -> None:
    # raw_request only returns once the proxy closed the connection.
    resp = raw_request(env["port"], request_bytes, timeout=15)
    assert status_of(resp) == expected
    assert resp.count(b"HTTP/1.1 ") == 1  # nothing smuggled to the backend answered


def test_http10_without_host_is_accepted(env: dict[str, Any]) -> None:
    resp = raw_request(env["port"], b"GET /echo HTTP/1.0\r\n\r\n")
    assert status_of(resp) == 200


def test_chunk_extensions_are_accepted(env: dict[str, Any]) -> None:
    resp = raw_request(env["port"], b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\n\r\n")
    assert status_of(resp) == 200 and b'"body_len": 3' in resp


def test_slowloris_gets_408_after_header_timeout(env: dict[str, Any]) -> None:
    with socket.create_connection(("127.0.0.1", env["port"]), timeout=15) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: ")
        data = s.recv(4096)
        assert status_of(data) == 408
        assert s.recv(4096) == b""


def test_idle_keepalive_connection_is_closed_silently(backends: Any, proxy: Proxy) -> None:
    b = backends("b")
    port = proxy.set_table(http_table({"web": {"stable": (100, [b])}}, idle_timeout=0.5))["gw"]
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        assert s.recv(4096) == b""


# --- upstream responses that must not be forwarded ------------------------------

class CannedBackend:
    """A raw-socket backend answering every request with the same bytes."""

    def __init__(self, response: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.response = response
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = c.recv(65536)
                    if not piece:
                        break
                    data += piece
                c.sendall(self.response)


BAD_RESPONSES = [
    ("cl_and_te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("differing_cl", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("garbage_status", b"HTTP/1.1 2x0 OK\r\n\r\n"),
    ("not_http", b"SSH-2.0-OpenSSH\r\n\r\n"),
]


@pytest.mark.parametrize("name,response", BAD_RESPONSES, ids=[r[0] for r in BAD_RESPONSES])
def test_ambiguous_upstream_response_becomes_502(proxy: Proxy, name: str, response: bytes) -> None:
    evil = CannedBackend(response)
    table = http_table({"web": {"stable": (100, [])}})
    table["clusters"]["web"]["subsets"]["stable"]["endpoints"] = [
        {"id": "evil", "address": f"127.0.0.1:{evil.port}"}]
    port = proxy.set_table(table)["gw"]
    resp = raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(resp) == 502
    evil.sock.close()


# --- property tests ------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.binary(max_size=20000), sizes=st.lists(st.integers(1, 5000), min_size=1),
       splits=st.lists(st.integers(1, 3000), min_size=1))
def test_any_chunking_delivers_identical_body(
    env: dict[str, Any], body: bytes, sizes: list[int], splits: list[int]
) -> None:
    chunks, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        chunks.append(b"%x\r\n%s\r\n" % (len(body[i:i + n]), body[i:i + n]))
        i, k = i + n, k + 1
    wire = (b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", env["port"]), timeout=20) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pos, k = 0, 0
        while pos < len(wire):
            n = splits[k % len(splits)]
            s.sendall(wire[pos:pos + n])
            pos, k = pos + n, k + 1
        data = b""
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
    assert status_of(data) == 200
    echoed = json.loads(data.partition(b"\r\n\r\n")[2])
    assert echoed["body_len"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(garbage=st.one_of(
    st.binary(min_size=1, max_size=2000),
    st.lists(st.sampled_from([b"GET ", b"POST ", b"/ ", b"HTTP/1.1", b"\r\n", b"Host: x",
                              b"Content-Length: 5", b"Transfer-Encoding: chunked", b": ",
                              b"\x00", b"\n", b" ", b"0\r\n\r\n", b"ff\r\n"]), max_size=30
             ).map(b"".join),
))
def test_garbage_never_crashes_and_gets_4xx_or_close(env: dict[str, Any], garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", env["port"]), timeout=20) as s:
        try:
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        data = b""
        while True:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            data += piece
    if data:
        code = status_of(data)
        assert code < 500 or code in (501, 502, 503, 505)
    assert env["proxy"].proc.poll() is None


def test_transfer_encoding_status_table() -> None:
    assert safety.transfer_encoding_status(b"chunked") == 0
    assert safety.transfer_encoding_status(b" Chunked ") == 0
    assert safety.transfer_encoding_status(b"gzip, chunked") == 501
    assert safety.transfer_encoding_status(b"chunked, gzip") == 400
    assert safety.transfer_encoding_status(b"chu\x0bnked") == 400
    assert safety.transfer_encoding_status(b"") == 400


def test_response_framing_error_detects_ambiguity() -> None:
    assert safety.response_framing_error([(b"Content-Length", b"1"), (b"Transfer-Encoding", b"chunked")])
    assert safety.response_framing_error([(b"Content-Length", b"1"), (b"content-length", b"2")])
    assert not safety.response_framing_error([(b"Content-Length", b"1"), (b"content-length", b"1")])
    assert not safety.response_framing_error([(b"Transfer-Encoding", b"chunked")])


def test_interim_1xx_responses_are_forwarded_before_the_final_one(proxy: Proxy) -> None:
    canned = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    up = CannedBackend(canned)
    table = http_table({"web": {"stable": (100, [])}})
    table["clusters"]["web"]["subsets"]["stable"]["endpoints"] = [
        {"id": "canned", "address": f"127.0.0.1:{up.port}"}]
    port = proxy.set_table(table)["gw"]
    resp = raw_request(port, b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                             b"Content-Length: 2\r\nConnection: close\r\n\r\nhi")
    assert resp.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
    assert resp.endswith(b"\r\n\r\nok") and b"HTTP/1.1 200 OK" in resp
    up.sock.close()


# --- found by the request fuzzer (tests/fuzz/http.py) ------------------------------

@pytest.fixture
def recorder(proxy: Proxy) -> Iterator[tuple[int, Any]]:
    from tests.fuzz.http import RecordingUpstream
    up = RecordingUpstream()
    port = proxy.set_table(http_table({"web": {"stable": (100, [up])}}))["gw"]  # type: ignore[list-item]
    yield port, up
    up.close()


def _wait_seen(up: Any, n: int) -> list[Any]:
    from .conftest import wait_for
    wait_for(lambda: len(up.since(0)) >= n, 10, f"{n} requests at the upstream")
    return up.since(0)


@pytest.mark.parametrize("upgrade", [b"websocket", b"h2c"])
def test_bytes_after_a_declined_upgrade_never_reach_the_upstream_as_a_request(
        recorder: tuple[int, Any], upgrade: bytes) -> None:
    port, up = recorder
    resp = raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: " + upgrade +
                       b"\r\nConnection: Upgrade\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(resp) == 200 and resp.count(b"HTTP/1.1 ") == 1
    # the proxy's upstream connection is not reused either: a plain request gets its own
    # answer (before the fix it got the smuggled request's)
    resp = raw_request(port, b"POST /next HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\n\r\n")
    assert b'"method": "POST"' in resp, resp
    assert [s.target for s in _wait_seen(up, 2)] == [b"/", b"/next"]


@pytest.mark.parametrize("bad", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
], ids=["differing content-length", "obs-fold", "bad chunk size"])
def test_requests_pipelined_before_a_malformed_one_are_answered_first(
        recorder: tuple[int, Any], bad: bytes) -> None:
    port, up = recorder
    resp = raw_request(port, b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                             b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n" + bad)
    statuses = [int(resp[i + 9:i + 12]) for i in range(len(resp)) if resp.startswith(b"HTTP/1.1 ", i)]
    assert statuses == [200, 200, 400], resp
    assert resp.index(b'"target": "/first"') < resp.index(b'"target": "/second"')
    assert [s.target for s in _wait_seen(up, 2)] == [b"/first", b"/second"]


def test_connection_close_wins_over_keep_alive(recorder: tuple[int, Any]) -> None:
    port, _ = recorder
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n")
        data = b""
        while True:  # a timeout here (the proxy kept it open) fails the test
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
    assert status_of(data) == 200 and b"connection: close" in data.lower()


def test_http10_without_host_reaches_a_strict_upstream_with_an_empty_host(
        recorder: tuple[int, Any]) -> None:
    port, up = recorder
    resp = raw_request(port, b"GET /old HTTP/1.0\r\n\r\n")
    assert status_of(resp) == 200, resp  # was 502: h11 refuses HTTP/1.1 without Host
    (seen,) = _wait_seen(up, 1)
    assert (b"host", b"") in seen.headers


def test_transfer_encoding_in_http10_closes_the_connection_after_it(recorder: tuple[int, Any]) -> None:
    port, _ = recorder
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        data = b""
        while True:  # a timeout here (the proxy kept it open) fails the test
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
    assert status_of(data) == 200 and b'"len": 3' in data
