"""Client side of the HTTP proxy: request parsing, validation, routing, pipelining.

`ClientConnection` is the asyncio protocol of a downstream connection.  It
parses requests with llhttp, applies the RFC 9112 checks of `safety`, rewrites
the request head once (hop-by-hop headers out, X-Forwarded-*, traceparent in)
and hands it to an `Exchange`.  Requests pipelined on one connection are
served strictly in order.
"""
from __future__ import annotations

import asyncio
import os
from random import random
from time import monotonic
from typing import Callable, cast, Final
from dataclasses import dataclass, field

import httptools

from . import hold, safety, tracing
from .balancer import ClusterState
from .exchange import Exchange
from .limits import NO_LIMIT, ClientConnections, Refused, RouteLimits, TOO_MANY_CONNECTIONS
from .table import ClusterSpec
from .upstream import OUTBOX, UpstreamConnection

Route = tuple[bytes | None, bytes, ClusterState, RouteLimits | None]

_SPECIAL: Final = safety.HOP_BY_HOP | {
    b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto",
    b"traceparent", b"x-mso-route", b"cookie",
}
_PAUSE_PENDING: Final = 1
_PAUSE_UPSTREAM: Final = 2
_PAUSE_PIPELINE: Final = 4
MAX_PIPELINE: Final = 8

NOT_FOUND: Final = ClusterState(ClusterSpec("", "", "round_robin", ()), [], lambda: 0.0)
NO_ROUTE: Final[Route] = (None, b"/", NOT_FOUND, None)


class Reject(Exception):
    """Raised inside parser callbacks to answer with `status` and close."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Hub:
    """Process-wide state shared by every connection (a coarse clock, the live set)."""

    now: float = 0.0
    clients: set[ClientConnection] = field(default_factory=set)
    #: Tracing (tracing.py): the share of new traces recorded; below 0, tracing is off.
    trace_sample: float = -1.0

    def clock(self) -> float:
        """The coarse clock as a compiled callable (balancers call it per request)."""
        return self.now


FORWARDED_HTTP: Final = b"x-forwarded-proto: http\r\ntraceparent: "
FORWARDED_HTTPS: Final = b"x-forwarded-proto: https\r\ntraceparent: "


@dataclass
class ListenerContext:
    """What one HTTP listener needs per request; mutated in place by set_table."""

    hub: Hub
    routes: tuple[Route, ...] = ()
    by_host: bool = False
    header_timeout: float = 10.0
    idle_timeout: float = 75.0
    #: The X-Forwarded-Proto line (a client's own is dropped), then the traceparent name.
    forwarded: bytes = FORWARDED_HTTP
    #: A Strict-Transport-Security header line added to responses (TLS listeners), or b"".
    hsts: bytes = b""
    #: Not 0: every request is answered 308 to the same URL over https on this port.
    redirect: int = 0
    #: Open connections per client address (limits.py), counted in `conns`; 0: no limit.
    max_conns: int = 0
    conns: ClientConnections | None = None



def redirect_response(host: bytes | None, url: bytes, port: int) -> bytes:
    """308 to https (RFC 9110 15.4.9 keeps the method and body) on `port`, same host and
    target; 400 without a usable Host."""
    if url.startswith(b"http://"):  # absolute form: its authority is the host
        host, _, rest = url[7:].partition(b"/")
        url = b"/" + rest
    if not host or not url.startswith(b"/"):
        return safety.error_response(400)
    if host.startswith(b"["):  # an IPv6 literal, maybe with a port
        end = host.find(b"]")
        name = host[:end + 1] if end > 0 else host
    else:
        name = host.split(b":", 1)[0]
    location = b"https://" + name + (b"" if port == 443 else b":%d" % port) + url
    return (b"HTTP/1.1 308 Permanent Redirect\r\nlocation: " + location +
            b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


def match_route(routes: tuple[Route, ...], host: bytes | None, path: bytes) -> Route:
    """First route whose host (if any) equals and whose path prefix covers `path`."""
    for route in routes:
        rhost, prefix = route[0], route[1]
        if rhost is not None and rhost != host:
            continue
        if prefix == b"/" or path == prefix:
            return route
        if path.startswith(prefix) and (
            prefix[-1:] == b"/" or path[len(prefix):len(prefix) + 1] in (b"/", b"?")
        ):
            return route
    return NO_ROUTE


class _TraceIds:
    """Fresh W3C traceparent values, made 256 at a time from one os.urandom read."""

    def __init__(self, flags: bytes = b"-01") -> None:
        self.ready: list[bytes] = []
        self.flags = flags  # "-01": sampled; "-00": a trace the proxy does not record

    def take(self) -> bytes:
        ready = self.ready
        if not ready:
            # 24 random bytes each: 16 for the trace id, 8 for the span id (all-zero ids
            # are invalid but have probability 2**-128).
            h = os.urandom(24 * 256).hex().encode()
            parts: list[bytes] = []
            for i in range(0, 48 * 256, 48):
                parts += (b"00-", h[i:i + 32], b"-", h[i + 32:i + 48], self.flags)
            text = b"".join(parts)  # one buffer, then one slice per id: fewer allocations
            ready.extend([text[i:i + 55] for i in range(0, 55 * 256, 55)])
        return ready.pop()

    def forget(self) -> None:
        self.ready = []


_TRACE_IDS: Final = _TraceIds()
_UNSAMPLED_IDS: Final = _TraceIds(b"-00")
# A forked child must not hand out the ids its parent still holds.
os.register_at_fork(after_in_child=_TRACE_IDS.forget)
os.register_at_fork(after_in_child=_UNSAMPLED_IDS.forget)
_SAMPLED_FLAGS: Final = b"13579bdfBDF"  # last hex digit of trace-flags with `sampled` set


def new_traceparent() -> bytes:
    return _TRACE_IDS.take()


def _valid_traceparent(v: bytes) -> bool:
    return len(v) == 55 and v[2:3] == b"-" and v[35:36] == b"-" and v[52:53] == b"-"


class ClientConnection:
    """asyncio protocol of one client connection (duck-typed: mypyc-compiled classes
    cannot subclass asyncio.Protocol)."""

    __deletable__ = ["parser"]  # mypyc: `del self.parser` breaks the parser cycle

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.hub = ctx.hub
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # Bound once: a method lookup per call shows in the profile of the hot path.
        self.feed: Callable[[bytes], None] = self.parser.feed_data
        self.write: Callable[[bytes], object] = _ignore
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.hbytes = 0
        self.partial = False
        self.deadline = 0.0
        self.exchanges: list[Exchange] = []
        self.rx: Exchange | None = None
        self.tunnel_rx: Exchange | None = None
        self.tunnel: UpstreamConnection | None = None
        self.paused = 0
        self.closed = False
        self.wbuf: list[bytes] | None = None
        self.flush_queued = False  # on OUTBOX's client list; wbuf is sent at its drain
        self.peer = b"unknown"
        self.xff_line = b""
        # A malformed request behind complete pipelined ones: its error is answered after
        # theirs (responses stay in request order), then the connection closes.
        self.reject_status = 0
        self.reject_response = b""  # that error's response when not the canned one
        # Limits (limits.py): the body bytes the request being read may still send
        # (NO_LIMIT: any), and the counter this connection is counted in.
        self.body_left = NO_LIMIT
        self.body_limits: RouteLimits | None = None
        self.counted: ClientConnections | None = None

    # --- asyncio.Protocol -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.write = self.transport.write
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = str(peer[0]).encode()
        self.xff_line = b"x-forwarded-for: %s\r\n" % self.peer
        self.deadline = self.hub.now + self.ctx.idle_timeout
        self.hub.clients.add(self)
        conns = self.ctx.conns
        if conns is not None and self.ctx.max_conns > 0:
            if not conns.enter(self.peer, self.ctx.max_conns):
                self.feed = _ignore
                self.transport_write(TOO_MANY_CONNECTIONS)
                self._close()
                return
            self.counted = conns

    def data_received(self, data: bytes) -> None:
        if self.tunnel_rx is not None:
            self.tunnel_rx.on_client_tunnel(data)
            return
        if not self.partial and not self.exchanges:
            # First bytes of a new request: from now on the header timeout applies.
            self.partial = True
            self.deadline = self.hub.now + self.ctx.header_timeout
        try:
            self.feed(data)
        except httptools.HttpParserUpgrade as exc:
            self._on_upgrade(data[exc.args[0]:])
        except httptools.HttpParserCallbackError as exc:
            ctx = exc.__context__
            if isinstance(ctx, Refused):
                self.reject(ctx.status, ctx.response)
            else:
                self.reject(ctx.status if isinstance(ctx, Reject) else 400)
        except httptools.HttpParserError as exc:
            self.reject(505 if "HTTP version" in str(exc) else 400)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        # Break every cycle through this connection now (parser, the exchange being read,
        # a tunnel): with one connection per request, cyclic garbage would pile up and
        # each collection of it would stall every connection for milliseconds.
        del self.parser
        self.feed = self.write = _ignore
        self.rx = self.tunnel_rx = None
        self.hub.clients.discard(self)
        if self.counted is not None:
            self.counted.leave(self.peer)
            self.counted = None
        for ex in self.exchanges:
            ex.cancel()
        self.exchanges = []
        if self.tunnel is not None:
            self.tunnel.close()

    def pause_writing(self) -> None:
        conn = self._upstream()
        if conn is not None:
            conn.pause_reading()

    def resume_writing(self) -> None:
        conn = self._upstream()
        if conn is not None:
            conn.resume_reading()

    def _upstream(self) -> UpstreamConnection | None:
        if self.tunnel is not None:
            return self.tunnel
        return self.exchanges[0].conn if self.exchanges else None

    # --- llhttp callbacks -------------------------------------------------
    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > safety.MAX_URL:
            raise Reject(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.hbytes += len(name) + len(value)
        if self.hbytes > safety.MAX_HEADER_BYTES or len(self.headers) > safety.MAX_HEADERS:
            raise Reject(431)
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            status = safety.transfer_encoding_status(value)
            if status:
                raise Reject(status)

    def on_headers_complete(self) -> None:
        self.partial = False
        if self.ctx.redirect:
            host = None
            for name, value in self.headers:
                if name.lower() == b"host":
                    host = value
            self.feed = _ignore
            self.transport_write(redirect_response(host, self.url, self.ctx.redirect))
            self._close()
            return
        ex = self._build_exchange()
        self.headers = []
        self.url = b""
        self.hbytes = 0
        self.rx = ex
        self.exchanges.append(ex)
        if len(self.exchanges) == 1:
            ex.start()
        elif len(self.exchanges) >= MAX_PIPELINE:
            self.pause(_PAUSE_PIPELINE)

    def on_body(self, body: bytes) -> None:
        left = self.body_left
        if left != NO_LIMIT:
            left -= len(body)
            if left < 0 and self.body_limits is not None:
                raise self.body_limits.over_body()
            self.body_left = left
        rx = self.rx
        if rx is not None and not rx.done:
            rx.on_client_body(body)

    def on_message_complete(self) -> None:
        rx = self.rx
        if rx is not None:
            if not rx.done:
                rx.on_client_complete()
            else:
                rx.req_done = True

    # --- request head rewrite -----------------------------------------------
    def _build_exchange(self) -> Exchange:
        """Validate the parsed head and rewrite it for the upstream in one pass.

        Deliberately one function: it runs once per request and every extra call
        or tuple of results costs throughput.
        """
        p = self.parser
        method = p.get_method()
        if method == b"CONNECT":
            raise Reject(405)
        out = [method + b" " + self.url + b" HTTP/1.1\r\n"]
        host: bytes | None = None
        hosts = 0
        chunked = False
        xff: bytes | None = None
        trace: bytes | None = None
        pin: str | None = None
        drop: list[bytes] | None = None
        upgrade: bytes | None = None
        clen: bytes | None = None
        connection = False
        close = False
        for name, value in self.headers:
            n = name.lower()
            if n not in _SPECIAL:
                out.append(name + b": " + value + b"\r\n")
                continue
            if n == b"host":
                hosts += 1
                host = value
                out.append(name + b": " + value + b"\r\n")
            elif n == b"content-length":
                if not safety.content_length_ok(value):
                    raise Reject(400)
                clen = value
                out.append(name + b": " + value + b"\r\n")
            elif n == b"transfer-encoding":
                chunked = True
            elif n == b"x-forwarded-for":
                xff = value if xff is None else xff + b", " + value
            elif n == b"traceparent":
                trace = value
            elif n == b"x-mso-route":
                pin = value.strip().decode("latin-1")
                out.append(name + b": " + value + b"\r\n")
            elif n == b"cookie":
                if b"mso-route=" in value and pin is None:
                    pin = _cookie_pin(value)
                out.append(name + b": " + value + b"\r\n")
            elif n == b"connection":
                connection = True
                tokens = safety.connection_tokens(value)
                if b"close" in tokens:
                    close = True
                extra = [t for t in tokens if t not in (b"close", b"keep-alive", b"upgrade")]
                if extra:
                    drop = (drop or []) + extra
            elif n == b"upgrade":
                upgrade = value
        # `close` wins over `keep-alive` (RFC 9112 9.6), whatever llhttp makes of both
        keep_alive = p.should_keep_alive() and not close
        if keep_alive and not connection:
            # llhttp accepts only 0.9, 1.0, 1.1 and 2.0, and keeps a request alive by
            # default only for 1.1 (minor > 0): no need for get_http_version's string.
            http11 = True
        else:
            version = p.get_http_version()
            if version != "1.1" and version != "1.0":
                raise Reject(505)
            http11 = version == "1.1"
            if chunked and not http11:
                # Transfer-Encoding in HTTP/1.0: faulty framing, close after it (RFC 9112 6.1)
                keep_alive = False
        if hosts != 1:
            if http11 or hosts > 1:
                raise Reject(400)
            # HTTP/1.0 without Host, forwarded as 1.1, which requires one: empty when the
            # target has no authority (RFC 9112 3.2); strict upstreams refuse it otherwise.
            out.append(b"host: \r\n")
        if drop:
            out = [out[0]] + [h for h in out[1:] if h.split(b":", 1)[0].lower() not in drop]
        is_upgrade = upgrade is not None and p.should_upgrade()
        if is_upgrade:
            out.append(b"upgrade: %s\r\nconnection: upgrade\r\n" % upgrade)
        if xff is None:
            out.append(self.xff_line)
        else:
            out.append(b"x-forwarded-for: %s, %s\r\n" % (xff, self.peer))
        if trace is not None and not _valid_traceparent(trace):
            trace = None
        traced: tracing.Trace | None = None
        sample = self.hub.trace_sample
        if sample >= 0.0:
            # Parent-based sampling: a caller's traceparent decides; without one, chance.
            if trace is not None:
                if trace[54:55] in _SAMPLED_FLAGS:
                    traced = tracing.Trace(trace[3:35].lower(), trace[36:52].lower(),
                                           method, self.url, host)
            elif random() < sample:
                traced = tracing.Trace(tracing.new_trace_id(), b"", method, self.url, host)
            else:
                trace = _UNSAMPLED_IDS.take()
            if traced is not None:
                trace = traced.header(traced.span_id)  # each try forwards its own span
        if trace is None:
            trace = new_traceparent()
        ctx = self.ctx
        out.append(ctx.forwarded)
        out.append(trace)
        out.append(b"\r\ntransfer-encoding: chunked\r\n\r\n" if chunked else b"\r\n\r\n")
        hkey = host.split(b":", 1)[0].lower() if (ctx.by_host and host) else None
        route = match_route(ctx.routes, hkey, self.url)
        limits = route[3]
        if limits is not None:
            self.body_limits = limits
            self.body_left = limits.admit(self.peer, self.headers, clen, monotonic())
        elif self.body_left != NO_LIMIT:
            self.body_left = NO_LIMIT
        return Exchange(self, route[2], method, b"".join(out), chunked, pin,
                        keep_alive, http11, is_upgrade, traced)

    # --- called by exchanges --------------------------------------------------
    def transport_write(self, data: bytes) -> None:
        buf = self.wbuf
        if buf is not None:
            buf.append(data)
            return
        if not self.closed:
            self.write(data)

    def transport_writelines(self, data: list[bytes]) -> None:
        buf = self.wbuf
        if buf is not None:
            buf.extend(data)
            return
        t = self.transport
        if t is not None and not self.closed:
            t.writelines(data)

    def batch(self) -> None:
        """Collect writes until `flush`: one send() per upstream read, not per piece."""
        if self.wbuf is None:
            self.wbuf = []

    def flush_soon(self) -> None:
        """End a batch: its writes go out at the end of the loop's I/O batch, after the
        requests to upstreams (`upstream.Outbox`); until then later writes join it."""
        if not self.wbuf:
            self.wbuf = None
        elif not self.flush_queued:
            self.flush_queued = True
            OUTBOX.add_client(self)

    def flush(self) -> None:
        self.flush_queued = False
        buf = self.wbuf
        self.wbuf = None
        if buf:
            t = self.transport
            if t is not None and not self.closed:
                n = len(buf)
                if n == 1:
                    self.write(buf[0])
                    return
                if n <= 4:
                    size = 0
                    for piece in buf:
                        size += len(piece)
                    if size < 16384:
                        self.write(b"".join(buf))  # small pieces: one plain send, no iovec
                        return
                t.writelines(buf)

    def exchange_done(self, ex: Exchange) -> None:
        if self.exchanges and self.exchanges[0] is ex:
            self.exchanges.pop(0)
        if self.reject_status and not ex.keep_alive:
            self.reject_status = 0
        if self.reject_status:
            if not self.exchanges:
                self.transport_write(self.reject_response or
                                     safety.error_response(self.reject_status))
                self._close()
            else:
                self.exchanges[0].start()
            return
        if self.paused & (_PAUSE_PENDING | _PAUSE_UPSTREAM):
            # Back-pressure from that exchange's upstream no longer applies.
            self.resume(_PAUSE_PENDING | _PAUSE_UPSTREAM)
        if not ex.keep_alive:
            self._close()
            return
        # An early response (before the request body ended) keeps the connection:
        # the rest of that body is parsed and discarded, then the next request follows.
        if self.rx is ex:
            self.rx = None
        self.deadline = self.hub.now + self.ctx.idle_timeout
        if self.exchanges:
            self.exchanges[0].start()
        if self.paused & _PAUSE_PIPELINE and len(self.exchanges) < MAX_PIPELINE:
            self.resume(_PAUSE_PIPELINE)

    def exchange_failed(self, ex: Exchange, status: int) -> None:
        for other in self.exchanges:
            if other is not ex:
                other.cancel()
        self.exchanges = []
        if status == 503 and ex.attempts == 0 and ex.cluster.spec.hold is not None:
            self.transport_write(hold.BOOK.refusal(ex))  # scale to zero: with Retry-After
        elif status == 503 and ex.attempts == 0 and ex.cluster.spec.unavailable:
            spec = ex.cluster.spec
            self.transport_write(safety.unavailable_response(spec.service, spec.unavailable))
        else:
            self.transport_write(safety.error_response(status))
        self._close()

    def abort(self) -> None:
        self._close()

    def start_tunnel(self, conn: UpstreamConnection) -> None:
        self.tunnel = conn

    def _on_upgrade(self, rest: bytes) -> None:
        rx = self.rx
        if rx is None or rx.done or not rx.upgrade:
            self.reject(400)
            return
        self.tunnel_rx = rx
        if rest:
            rx.on_client_tunnel(rest)

    def reject(self, status: int, response: bytes = b"") -> None:
        """Framing or validation error (or a limit, with its own `response`): answer it,
        then close.

        Requests pipelined before the bad one and received whole are answered first, in
        order (their responses must not be replaced by the error, nor the error taken
        for theirs); a request whose body is what failed is cancelled with its upstream
        connection. Nothing more is read from the client."""
        self.feed = _ignore
        self.pause(_PAUSE_PIPELINE)
        keep: list[Exchange] = []
        busy = False
        for ex in self.exchanges:
            if ex.req_done and not ex.done:
                keep.append(ex)
            else:
                busy = busy or ex.resp_started
                ex.cancel()
        if keep and not busy:
            first = self.exchanges[0] is keep[0]
            self.exchanges = keep
            self.rx = None
            self.reject_status = status
            self.reject_response = response
            if not first:
                keep[0].start()
            return
        for ex in keep:
            busy = busy or ex.resp_started
            ex.cancel()
        self.exchanges = []
        if not busy:
            self.transport_write(response or safety.error_response(status))
        self._close()

    def check_timeouts(self, now: float) -> None:
        if self.exchanges:
            ex = self.exchanges[0]
            if now > ex.deadline and not ex.done:
                ex.on_timeout()
        elif now > self.deadline and self.tunnel is None:
            if self.partial:
                self.transport_write(safety.error_response(408))
            self._close()

    def pause(self, bit: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= bit

    def resume(self, bit: int) -> None:
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def _close(self) -> None:
        if self.wbuf is not None:
            self.flush()
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()


def _ignore(data: bytes) -> None:
    """Stand-in for a closed connection's parser and transport."""


def _cookie_pin(value: bytes) -> str | None:
    for part in value.split(b";"):
        k, _, v = part.strip().partition(b"=")
        if k == b"mso-route":
            return v.strip().decode("latin-1")
    return None
