"""Upstream side of the HTTP proxy: one keep-alive connection protocol plus pooling.

Each `UpstreamConnection` parses responses with llhttp and hands the events to
the `Exchange` currently attached to it.  Idle connections live on their
endpoint's `idle` list; a connection the upstream closed while idle removes
itself, and one found closing at checkout is skipped.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable, cast, Final, TYPE_CHECKING

import httptools

from .balancer import EndpointState

if TYPE_CHECKING:
    from .exchange import Exchange
    from .http_server import ClientConnection

MAX_IDLE_PER_ENDPOINT: Final = 512
MAX_HEAD: Final = 256 * 1024
TCP_QUICKACK: Final = 12  # linux/tcp.h; not re-armed by the kernel, so set per read


class UpstreamConnection:
    """One HTTP/1.1 connection to an upstream endpoint (an asyncio protocol, duck-typed:
    mypyc-compiled classes cannot subclass asyncio.Protocol)."""

    __deletable__ = ["parser"]  # mypyc: `del self.parser` breaks the parser cycle

    def __init__(self, endpoint: EndpointState) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.sock: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.feed: Callable[[bytes], None] = self.parser.feed_data  # bound once (hot path)
        self.exchange: Exchange | None = None
        # Bytes of the response head being received (raw, forwarded nearly as-is).
        self.acc = b""
        self.in_head = True
        self.reused = False
        self.got_bytes = False
        self.closed = False
        self.tunnel = False
        self.paused = False
        self.pending: list[bytes] | None = None  # request bytes waiting for OUTBOX.drain
        # The last response llhttp parsed on this connection, if it filled exactly one read
        # and was framed by Content-Length: (head, status, head + body length, keep-alive).
        # A read with the same head and that length is the same message, so it is replayed
        # without the parser (upstreams repeat identical heads for same-shaped responses).
        self.known_head = b""
        self.known_status = 0
        self.known_size = -1
        self.known_keep = False
        self.chunk_size = -1  # length of the read being parsed, -1 unless it began a message
        self.body_seen = 0
        self.last_head = b""

    # --- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.sock = transport.get_extra_info("socket")

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            # Nothing was asked: an idle connection must not talk. Drop it.
            self.close()
            return
        if self.tunnel:
            ex.client.transport_write(data)
            return
        self.got_bytes = True
        if self.in_head:
            if self.acc:
                self.acc = self.acc + data
                self.chunk_size = -1
            else:
                if len(data) == self.known_size and not ex.is_head and data.startswith(
                        self.known_head):
                    self._replay_known(ex, data)
                    return
                self.acc = data
                self.chunk_size = len(data)
                self.body_seen = 0
            if len(self.acc) > MAX_HEAD:
                ex.on_upstream_error(self)
                self.close()
                return
        client = ex.client
        client.batch()
        try:
            self.feed(data)
        except httptools.HttpParserUpgrade as exc:
            self.tunnel = True
            rest = data[exc.args[0]:]
            if rest:
                client.transport_write(rest)
        except httptools.HttpParserError:
            if self.exchange is not None:
                self.exchange.on_upstream_error(self)
            self.close()
        finally:
            client.flush_soon()
            if self.exchange is not None and self.sock is not None:
                # The response is not complete: acknowledge at once. An upstream that
                # writes its head and body separately (Python's http.server, among
                # many) holds the body back under Nagle's algorithm until the head is
                # acknowledged, and Linux delays that ACK by up to 40 ms on a pooled
                # connection: the median GET through the proxy took 11 ms, not 0.6.
                try:
                    self.sock.setsockopt(socket.IPPROTO_TCP, TCP_QUICKACK, 1)
                except OSError:
                    pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pending = None
        del self.parser  # break the protocol <-> parser cycle now, not at the next GC
        self.feed = _ignore
        idle = self.endpoint.idle
        if self.exchange is None:
            try:
                idle.remove(self)
            except ValueError:
                pass
            return
        ex = self.exchange
        self.exchange = None
        ex.on_upstream_lost(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause(2)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume(2)

    # --- llhttp callbacks -------------------------------------------------
    def _replay_known(self, ex: Exchange, data: bytes) -> None:
        """`data` is byte for byte the head llhttp accepted last time plus a body of
        the Content-Length that head declares: what the parser would report, reported."""
        head = self.known_head
        client = ex.client
        client.batch()
        ex.on_response_head(self, self.known_status, head)
        if len(data) > len(head) and self.exchange is ex:
            ex.on_response_body(data[len(head):])
        if self.exchange is ex:
            ex.on_response_complete(self, self.known_keep)
        client.flush_soon()

    def on_headers_complete(self) -> None:
        raw = self.acc
        end = raw.find(b"\r\n\r\n") + 4
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.acc = raw[end:]  # the final response head may follow in the same read
            self.chunk_size = -1
        else:
            self.acc = b""
            self.in_head = False
        head = self.last_head = raw[:end]
        ex = self.exchange
        if ex is not None:
            ex.on_response_head(self, status, head)

    def on_body(self, body: bytes) -> None:
        self.body_seen += len(body)
        ex = self.exchange
        if ex is not None:
            ex.on_response_body(body)

    def on_message_complete(self) -> None:
        self.in_head = True
        ex = self.exchange
        if ex is not None:
            keep = self.parser.should_keep_alive()
            self._remember(ex, keep)
            ex.on_response_complete(self, keep)

    def _remember(self, ex: Exchange, keep: bool) -> None:
        """Keep this response's head for `_replay_known` if the message was exactly the
        read it arrived in and no framing bytes were in it (so: Content-Length or none)."""
        size = self.chunk_size
        self.chunk_size = -1
        status = ex.status
        if size < 0 or ex.is_head or status < 200 or status == 204 or status == 304:
            return
        head = self.last_head
        if len(head) + self.body_seen == size:
            self.known_head = head
            self.known_status = status
            self.known_size = size
            self.known_keep = keep

    # --- helpers ------------------------------------------------------------
    def reset_parser(self) -> None:
        """Start a fresh parser, e.g. after a HEAD response whose body llhttp would await."""
        self.parser = httptools.HttpResponseParser(self)
        self.feed = self.parser.feed_data
        self.acc = b""
        self.in_head = True
        self.chunk_size = -1

    # --- request bytes ----------------------------------------------------------
    def send_soon(self, data: list[bytes]) -> None:
        """Queue a request for the end of this I/O batch (see `Outbox`)."""
        pending = self.pending
        if pending is not None:
            pending.extend(data)
            return
        self.pending = data
        OUTBOX.add(self)

    def send(self, data: bytes) -> None:
        """Write request bytes now, or behind queued ones so the order is kept."""
        pending = self.pending
        if pending is not None:
            pending.append(data)
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def flush_pending(self) -> None:
        pending = self.pending
        self.pending = None
        t = self.transport
        if pending and t is not None and not self.closed:
            if len(pending) == 1:
                t.write(pending[0])
            else:
                t.writelines(pending)

    def close(self) -> None:
        self.exchange = None
        self.pending = None  # a request that was never sent is just dropped with it
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
            try:
                self.endpoint.idle.remove(self)
            except ValueError:
                pass

    def pause_reading(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()


def _ignore(data: bytes) -> None:
    """Stand-in for a closed connection's parser."""


class Outbox:
    """Writes held to the end of the loop's I/O batch: requests to upstreams first, then
    responses to clients (HAProxy's order: read everything, then write).

    Writing each request the moment it is parsed wakes the upstream process once per
    request; writing the batch together lets it wake once and answer them all.  Writing
    the responses to clients as they arrive made every request read in the same batch
    wait behind those sends (the costly syscalls of a loopback turn) before it went
    upstream; now the requests go first and the responses follow.  The drain is a
    call_soon callback, which uvloop runs before it polls again, so nothing waits for
    more I/O: at low load a write goes out one loop turn later, microseconds.
    """

    def __init__(self) -> None:
        self.conns: list[UpstreamConnection] = []
        self.clients: list[ClientConnection] = []
        self.scheduled = False

    def _schedule(self) -> bool:
        """Arrange a drain; False when there is no running loop (fake transports in
        unit tests), in which case the caller writes at once."""
        if self.scheduled:
            return True
        try:
            asyncio.get_running_loop().call_soon(self.drain)
        except RuntimeError:
            return False
        self.scheduled = True
        return True

    def add(self, conn: UpstreamConnection) -> None:
        if self._schedule():
            self.conns.append(conn)
        else:
            conn.flush_pending()

    def add_client(self, client: ClientConnection) -> None:
        if self._schedule():
            self.clients.append(client)
        else:
            client.flush()

    def reset(self) -> None:
        """Forget writes scheduled on a loop that is gone (one process running many loops,
        as unit tests do: a drain still queued when its loop closed never runs)."""
        self.conns = []
        self.clients = []
        self.scheduled = False

    def drain(self) -> None:
        self.scheduled = False
        conns = self.conns
        clients = self.clients
        self.conns = []
        self.clients = []
        for conn in conns:
            conn.flush_pending()
        for client in clients:
            client.flush()


OUTBOX: Final = Outbox()


def checkout(endpoint: EndpointState) -> UpstreamConnection | None:
    """Take a live idle connection to `endpoint`, skipping ones already closing."""
    idle = endpoint.idle
    while idle:
        conn: UpstreamConnection = idle.pop()
        t = conn.transport
        if t is not None and not conn.closed and not t.is_closing():
            conn.reused = True
            return conn
    return None


def checkin(conn: UpstreamConnection) -> None:
    """Return a connection that finished a response cleanly to its endpoint's pool."""
    conn.exchange = None
    conn.got_bytes = False
    if conn.paused:
        conn.resume_reading()
    ep = conn.endpoint
    if ep.draining or conn.closed or not ep.pooled \
            or len(ep.idle) >= MAX_IDLE_PER_ENDPOINT:
        conn.close()
    else:
        ep.idle.append(conn)


def close_idle(endpoint: EndpointState) -> None:
    """Close every pooled idle connection of an endpoint (drain / removal)."""
    idle = list(endpoint.idle)
    endpoint.idle.clear()
    for conn in idle:
        conn.close()


async def connect(endpoint: EndpointState, timeout: float) -> UpstreamConnection:
    """Open a new connection; raises OSError or asyncio.TimeoutError."""
    loop = asyncio.get_running_loop()
    conn = UpstreamConnection(endpoint)
    factory = cast(Callable[[], asyncio.Protocol], lambda: conn)
    await asyncio.wait_for(
        loop.create_connection(factory, endpoint.host, endpoint.port), timeout)
    return conn


def connect_error_is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (OSError, asyncio.TimeoutError))

