"""Upstream connections: a response head already parsed is replayed without the parser
(only for a read that is exactly one Content-Length-framed message with that head), and
requests and then responses are written together at the end of the I/O batch, in order."""
from __future__ import annotations

import asyncio
import pytest

from mso.proxy import upstream
from mso.proxy.balancer import build_cluster
from mso.proxy.http_server import ClientConnection, Hub, ListenerContext
from mso.proxy.metrics import Registry
from mso.proxy.table import parse_table

from .fakes import RecordingTransport

HEAD = (b"HTTP/1.1 200 OK\r\nDate: Fri, 27 Nov 2026 13:00:00 GMT\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n")


class Harness:
    """One client connection, one pooled upstream connection, fake transports."""

    def __init__(self) -> None:
        table = parse_table({"version": 1, "listeners": [], "clusters": {"web": {
            "service": "web", "balancer": "round_robin",
            "subsets": {"stable": {"weight": 100,
                                   "endpoints": [{"id": "b0", "address": "127.0.0.1:1000"}]}}}}})
        hub = Hub(now=0.0)
        self.cluster = build_cluster(table.clusters["web"], {}, Registry(), lambda: hub.now)
        self.endpoint = self.cluster.endpoints[0]
        self.conn = upstream.UpstreamConnection(self.endpoint)
        self.upstream_t = RecordingTransport()
        self.conn.connection_made(self.upstream_t)  # type: ignore[arg-type]
        self.endpoint.idle.append(self.conn)
        self.client = ClientConnection(ListenerContext(hub=hub, routes=((None, b"/", self.cluster, None),)))
        self.client_t = RecordingTransport()
        self.client.connection_made(self.client_t)  # type: ignore[arg-type]
        self.parsed = 0
        feed = self.conn.feed

        def counting_feed(data: bytes) -> None:
            self.parsed += 1
            feed(data)

        self.conn.feed = counting_feed

    def exchange(self, *reads: bytes, method: bytes = b"GET") -> bytes:
        """One request through the proxy; the upstream answers with `reads`."""
        self.client_t.sent.clear()
        self.client.data_received(method + b" / HTTP/1.1\r\nHost: a\r\n\r\n")
        conn = self.client.exchanges[0].conn
        assert conn is self.conn
        for data in reads:
            conn.data_received(data)
        return b"".join(self.client_t.sent)


def test_same_head_and_length_is_replayed_without_the_parser_and_forwarded_the_same() -> None:
    h = Harness()
    first = h.exchange(HEAD + b"ok")
    assert h.parsed == 1 and first.endswith(b"\r\n\r\nok")
    second = h.exchange(HEAD + b"ok")
    assert h.parsed == 1, "the second identical response should not reach the parser"
    assert second == first
    assert h.endpoint.idle == [h.conn]  # checked back in: the exchange completed
    assert h.endpoint.stats.requests == 2


def test_replayed_response_carries_its_own_body_bytes() -> None:
    h = Harness()
    h.exchange(HEAD + b"ok")
    assert h.exchange(HEAD + b"no").endswith(b"\r\n\r\nno")
    assert h.parsed == 1


def test_different_head_goes_through_the_parser_and_becomes_the_known_one() -> None:
    h = Harness()
    h.exchange(HEAD + b"ok")
    other = HEAD.replace(b"13:00:00", b"13:00:01")
    answer = h.exchange(other + b"ok")
    assert b"13:00:01 GMT\r\n" in answer and answer.endswith(b"\r\n\r\nok")
    assert h.parsed == 2
    h.exchange(other + b"ok")
    assert h.parsed == 2


@pytest.mark.parametrize("reads", [
    # body split over two reads
    (HEAD + b"o", b"k"),
    # head split over two reads
    (HEAD[:20], HEAD[20:] + b"ok"),
], ids=["split-body", "split-head"])
def test_a_response_spread_over_reads_is_not_remembered(reads: tuple[bytes, ...]) -> None:
    h = Harness()
    assert h.exchange(*reads).endswith(b"\r\n\r\nok")
    h.exchange(HEAD + b"ok")
    assert h.parsed == len(reads) + 1


def test_chunked_response_is_not_remembered() -> None:
    h = Harness()
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"2\r\nok\r\n0\r\n\r\n")
    h.exchange(chunked)
    h.exchange(chunked)
    assert h.parsed == 2


def test_extra_bytes_after_the_message_are_not_replayed() -> None:
    h = Harness()
    h.exchange(HEAD + b"ok")
    h.exchange(HEAD + b"okX")  # longer than the known message: the parser decides
    assert h.parsed == 2


def test_head_request_is_never_replayed() -> None:
    h = Harness()
    h.exchange(HEAD + b"ok")
    answer = h.exchange(HEAD, method=b"HEAD")
    assert h.parsed == 2
    assert answer.endswith(b"content-length: 2\r\n\r\n")


def test_replayed_connection_close_closes_the_upstream_connection() -> None:
    h = Harness()
    closing = HEAD.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    h.exchange(closing + b"ok")
    assert h.upstream_t.closed
    # A fresh connection to the same endpoint learns the head again, then replays it.
    h2 = Harness()
    h2.exchange(closing + b"ok")
    h2.conn.closed = False
    h2.upstream_t.closed = False
    h2.endpoint.idle.append(h2.conn)
    h2.exchange(closing + b"ok")
    assert h2.parsed == 1 and h2.upstream_t.closed


def test_requests_go_out_together_after_the_batch_in_order_behind_queued_bytes() -> None:
    async def scenario() -> None:
        h = Harness()
        conn = h.conn
        conn.send_soon([b"head-1"])
        conn.send(b"body-1")  # must not overtake the queued head
        other = upstream.UpstreamConnection(h.endpoint)
        other_t = RecordingTransport()
        other.connection_made(other_t)  # type: ignore[arg-type]
        other.send_soon([b"head-2"])
        assert h.upstream_t.sent == [] and other_t.sent == []  # nothing before the batch ends
        await asyncio.sleep(0)
        assert h.upstream_t.sent == [b"head-1body-1"]
        assert other_t.sent == [b"head-2"]
        conn.send(b"after")  # nothing queued any more: written at once
        assert h.upstream_t.sent[-1] == b"after"

    asyncio.run(scenario())


def test_closing_drops_a_request_that_was_never_sent() -> None:
    async def scenario() -> None:
        h = Harness()
        h.conn.send_soon([b"head"])
        h.conn.close()
        await asyncio.sleep(0)
        assert h.upstream_t.sent == []

    asyncio.run(scenario())


class JournalTransport(RecordingTransport):
    """Also records every write, tagged, in one journal shared across transports."""

    def __init__(self, journal: list[str], tag: str) -> None:
        super().__init__()
        self.journal = journal
        self.tag = tag

    def write(self, data: bytes) -> None:
        super().write(data)
        self.journal.append(self.tag)

    def writelines(self, data: list[bytes]) -> None:
        super().writelines(data)
        self.journal.append(self.tag)


def _journaled(journal: list[str], name: str) -> Harness:
    h = Harness()
    h.upstream_t = JournalTransport(journal, f"{name} request")
    h.conn.connection_made(h.upstream_t)  # type: ignore[arg-type]
    h.client_t = JournalTransport(journal, f"{name} response")
    h.client.connection_made(h.client_t)  # type: ignore[arg-type]
    return h


def test_requests_read_in_a_batch_go_upstream_before_that_batch_s_responses() -> None:
    """HAProxy's order: a request must not wait behind the responses to other clients."""
    async def scenario() -> None:
        journal: list[str] = []
        a, b = _journaled(journal, "a"), _journaled(journal, "b")
        a.client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(0)
        assert journal == ["a request"]
        # One I/O batch: a's upstream answers, then b's request is read.
        a.conn.data_received(HEAD + b"ok")
        b.client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert journal == ["a request"]
        await asyncio.sleep(0)
        assert journal == ["a request", "b request", "a response"]
        assert a.client_t.sent[0].startswith(b"HTTP/1.1 200 OK\r\n")

    asyncio.run(scenario())


def test_a_response_batched_for_the_end_of_the_turn_is_sent_once_with_later_writes() -> None:
    async def scenario() -> None:
        h = Harness()
        h.client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(0)
        h.conn.data_received(HEAD)  # head now, body in a second read of the same batch
        h.conn.data_received(b"ok")
        assert h.client_t.sent == []
        await asyncio.sleep(0)
        assert len(h.client_t.sent) == 1
        assert h.client_t.sent[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert h.client_t.sent[0].endswith(b"\r\n\r\nok")

    asyncio.run(scenario())


def test_a_client_closed_with_a_batched_response_gets_the_response_first() -> None:
    async def scenario() -> None:
        h = Harness()
        h.client.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(0)
        h.conn.data_received(HEAD + b"ok")
        assert h.client_t.closed
        assert b"".join(h.client_t.sent).endswith(b"ok")
        await asyncio.sleep(0)  # the queued drain finds nothing left to send
        assert b"".join(h.client_t.sent).count(b"ok") == 1

    asyncio.run(scenario())


class _Socket:
    def __init__(self) -> None:
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.options.append((level, name, value))


def test_an_unfinished_response_is_acknowledged_at_once() -> None:
    # An upstream writing head and body in two sends holds the body back (Nagle) until
    # the head is acknowledged; a delayed ACK made every such response 40 ms late.
    import socket

    h = Harness()
    h.conn.sock = sock = _Socket()
    h.exchange(HEAD, b"ok")
    quickack = (socket.IPPROTO_TCP, upstream.TCP_QUICKACK, 1)
    assert sock.options == [quickack], "after the head alone the proxy must ACK at once"
    sock.options.clear()
    h.exchange(HEAD + b"ok")
    assert sock.options == [], "a complete response needs no extra system call"


def _cluster(pool: bool | None) -> object:
    raw: dict[str, object] = {"service": "web", "balancer": "round_robin", "subsets": {
        "stable": {"weight": 100, "endpoints": [{"id": "b0", "address": "127.0.0.1:1000"}]}}}
    if pool is not None:
        raw["pool"] = pool
    table = parse_table({"version": 1, "listeners": [], "clusters": {"web": raw}})
    return build_cluster(table.clusters["web"], {}, Registry(), lambda: 0.0)


@pytest.mark.parametrize("pool,kept", [(None, 1), (True, 1), (False, 0)])
def test_a_cluster_without_pooling_closes_each_connection_after_its_response(
        pool: bool | None, kept: int) -> None:
    """`pool: false` (a Kubernetes Service: kube-proxy picks a pod per connection): a
    finished connection is closed, never reused, so the next request may reach another
    pod; by default it goes back to the pool."""
    cluster = _cluster(pool)
    endpoint = cluster.endpoints[0]  # type: ignore[attr-defined]
    conn = upstream.UpstreamConnection(endpoint)
    conn.connection_made(RecordingTransport())  # type: ignore[arg-type]
    upstream.checkin(conn)
    assert len(endpoint.idle) == kept
    assert conn.closed is (kept == 0)


def test_pool_must_be_a_boolean() -> None:
    from mso.proxy.table import TableError
    with pytest.raises(TableError, match=r"pool: expected true or false"):
        _cluster("no")  # type: ignore[arg-type]
