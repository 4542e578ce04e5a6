"""One proxied HTTP request/response: endpoint choice, streaming, retries, errors.

An `Exchange` is created by the client connection once request headers are
parsed.  It owns the request bytes that may need replaying (head, and body up
to MAX_REPLAY_BODY), attaches to a pooled or fresh upstream connection, and
re-frames the response for the client.  Retries happen only before any response
byte reached the client.

Hung and slow upstreams: an idempotent request whose body is all here gets a second try
on another endpoint once its first has not answered within the cluster's per-try timeout
(or its hedge delay, when shorter), within the retry budget. The first try keeps going;
the first response head wins and the other try is closed. A first try that loses to an
answer that came within the per-try timeout counts as a failure toward outlier ejection,
so a hung endpoint leaves the rotation after a few requests; a slow one that wins is a
success, so slow endpoints are never failed by it.
"""
from __future__ import annotations

import asyncio
import time
from typing import Final, TYPE_CHECKING

from . import accesslog, hold, response_head, tracing, upstream
from .balancer import ClusterState, EndpointState
from .safety import MAX_REPLAY_BODY

if TYPE_CHECKING:
    from .http_server import ClientConnection
    from .upstream import UpstreamConnection

IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
INF: Final = float("inf")
#: Responses to idempotent requests are held back until complete up to this size, so an
#: upstream that dies mid-response (SIGKILL, OOM) costs a retry on another endpoint
#: instead of a truncated response for the client. Bigger bodies stream as usual.
HOLD_LIMIT: Final = 64 * 1024
_now = time.perf_counter


class Exchange:
    __slots__ = (
        "client", "cluster", "method", "head", "chunked", "pin", "keep_alive",
        "http11", "is_head", "upgrade", "body", "body_size", "replayable",
        "req_done", "conn", "endpoint", "tried", "attempts", "stale_retries",
        "status", "resp_started", "resp_chunked", "eof_body", "done", "t0", "deadline",
        "held", "held_size", "spare", "spare_ep", "t_try", "t_spare", "timer", "early",
        "trace",
    )

    def __init__(
        self, client: ClientConnection, cluster: ClusterState, method: bytes, head: bytes,
        chunked: bool, pin: str | None, keep_alive: bool, http11: bool, upgrade: bool,
        trace: tracing.Trace | None = None,
    ) -> None:
        self.client = client
        self.cluster = cluster
        self.method = method
        self.head = head
        self.chunked = chunked
        self.pin = pin
        self.keep_alive = keep_alive
        self.http11 = http11
        self.is_head = method == b"HEAD"
        self.upgrade = upgrade
        self.body: list[bytes] | None = []
        self.body_size = 0
        self.replayable = True
        self.req_done = False
        self.conn: UpstreamConnection | None = None
        self.endpoint: EndpointState | None = None
        self.tried: tuple[str, ...] = ()
        self.attempts = 0
        self.stale_retries = 0
        self.status = 0
        self.resp_started = False
        self.resp_chunked = False
        self.eof_body = False
        self.done = False
        self.t0 = _now()
        self.deadline = client.hub.now + cluster.request_timeout
        self.held: list[bytes] | None = None
        self.held_size = 0
        # The second try of a slow idempotent request (see the module docstring).
        self.spare: UpstreamConnection | None = None
        self.spare_ep: EndpointState | None = None
        self.t_try = 0.0
        self.t_spare = 0.0
        self.timer: asyncio.TimerHandle | None = None
        # Bytes the client sent after an upgrade request, held until the upstream agrees
        # (101): an upstream that declines would read them as more requests (smuggling).
        self.early: list[bytes] | None = None
        # A sampled request's spans (tracing.py); None for all others.
        self.trace = trace

    # --- request side -------------------------------------------------------
    def start(self) -> None:
        if not self.cluster.name:
            self._fail(404)
            return
        self.cluster.budget.earn()
        ep = self.cluster.pick(self.pin)
        if ep is None:
            # Scale to zero: wait for a replica (mso.proxy.hold) rather than fail.
            if self.cluster.spec.hold is None or not hold.BOOK.park(self):
                self._fail(503)
            return
        self._attach(ep)

    def _attach(self, ep: EndpointState) -> None:
        self.endpoint = ep
        self.attempts += 1
        self.tried += (ep.id,)
        ep.inflight += 1
        ep.stats.requests += 1
        trace = self.trace
        if trace is not None:
            self.head = trace.start_try(ep.id, ep.subset, f"{ep.host}:{ep.port}", self.head)
        after = self.cluster.second_try_after
        if after > 0.0 and self.method in IDEMPOTENT and not self.upgrade:
            timer = self.timer
            if timer is not None:
                timer.cancel()
            self.t_try = _now()
            self.timer = asyncio.get_running_loop().call_later(after, self._second_try)
        conn = upstream.checkout(ep)
        if conn is not None:
            self._send_on(conn)
        else:
            asyncio.get_running_loop().create_task(self._connect(ep))

    # --- the second try of a slow idempotent request ----------------------------
    def _second_try(self) -> None:
        self.timer = None
        if (self.done or self.resp_started or self.spare_ep is not None or not self.req_done
                or not self.replayable or self.body is None):
            return
        cluster = self.cluster
        if self.attempts > cluster.max_retries:
            return
        ep = cluster.pick(self.pin, self.tried)
        if ep is None or ep.id in self.tried or not cluster.budget.try_spend():
            return
        self.attempts += 1
        self.tried += (ep.id,)
        self.spare_ep = ep
        self.t_spare = _now()
        ep.inflight += 1
        ep.stats.requests += 1
        ep.stats.hedges += 1
        trace = self.trace
        if trace is not None:
            trace.start_spare(ep.id, ep.subset, f"{ep.host}:{ep.port}", self.head)
        conn = upstream.checkout(ep)
        if conn is not None:
            self._send_spare(conn)
        else:
            asyncio.get_running_loop().create_task(self._connect_spare(ep))

    async def _connect_spare(self, ep: EndpointState) -> None:
        try:
            conn = await upstream.connect(ep, self.cluster.connect_timeout)
        except (OSError, asyncio.TimeoutError):
            ep.stats.connect_errors += 1
            self.cluster.record_failure(ep)
            if self.spare_ep is ep:
                self._drop_spare()
            return
        if self.spare_ep is not ep or self.done or self.resp_started:
            upstream.checkin(conn)  # decided meanwhile; nothing was sent on it
            return
        self._send_spare(conn)

    def _send_spare(self, conn: UpstreamConnection) -> None:
        self.spare = conn
        conn.exchange = self
        body = self.body
        head = self.head if self.trace is None else self.trace.spare_head
        conn.send_soon([head, *body] if body else [head])

    def _drop_spare(self) -> None:
        conn = self.spare
        self.spare = None
        if conn is not None:
            conn.close()
        ep = self.spare_ep
        if ep is not None:
            self.spare_ep = None
            ep.inflight -= 1
            self._end_try(ep, 0)

    def _settle(self) -> None:
        """The exchange is decided: no second try any more."""
        timer = self.timer
        if timer is not None:
            self.timer = None
            timer.cancel()
        if self.spare_ep is not None:
            self._drop_spare()

    def _spare_wins(self) -> None:
        """The second try answered first: it becomes the try; the first one is closed and,
        if the answer came within the per-try timeout, counts as a failure."""
        old = self.conn
        if old is not None:
            self.conn = None
            old.close()
        loser = self.endpoint
        if loser is not None:
            loser.inflight -= 1
            self._end_try(loser, 0)
            if _now() - self.t_spare < self.cluster.per_try_timeout:
                loser.stats.timeouts += 1
                self.cluster.record_failure(loser)
        self.endpoint = self.spare_ep
        self.conn = self.spare
        self.t_try = self.t_spare
        self.spare = None
        self.spare_ep = None

    def _drop_try(self, conn: UpstreamConnection) -> bool:
        """One of two tries ended without an answer (lost, unparseable, 5xx): forget it and
        wait for the other. False when there is no other to wait for."""
        if self.resp_started or self.spare is None:
            return False
        if conn is self.spare:
            ep = self.spare_ep
            self._drop_spare()
        elif conn is self.conn:
            ep = self.endpoint
            if ep is not None:
                ep.inflight -= 1
                self._end_try(ep, 0)
            conn.close()
            self.endpoint = self.spare_ep
            self.conn = self.spare
            self.t_try = self.t_spare
            self.spare = None
            self.spare_ep = None
        else:
            return False
        if ep is not None:
            self.cluster.record_failure(ep)
        return True

    async def _connect(self, ep: EndpointState) -> None:
        try:
            conn = await upstream.connect(ep, self.cluster.connect_timeout)
        except (OSError, asyncio.TimeoutError):
            ep.stats.connect_errors += 1
            self.cluster.record_failure(ep)
            self._release_endpoint()
            if not self.done:
                # Nothing reached the upstream: retrying costs it nothing, so no budget.
                self._retry_or_fail(502, budgeted=False)
            return
        if self.done:
            upstream.checkin(conn)
            self._release_endpoint()
            return
        self._send_on(conn)

    def _send_on(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.exchange = self
        body = self.body
        if body:
            conn.send_soon([self.head, *body])
            if self.body_size > MAX_REPLAY_BODY:
                self.body = None
                self.replayable = False
            self.client.resume(1)
        else:
            conn.send_soon([self.head])
        if self.req_done:
            self.deadline = self.client.hub.now + self.cluster.response_header_timeout

    def on_client_body(self, data: bytes) -> None:
        if self.chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self._send_body(data)

    def _send_body(self, data: bytes) -> None:
        conn = self.conn
        if conn is not None:
            conn.send(data)
            if self.body is not None:
                self.body_size += len(data)
                if self.body_size <= MAX_REPLAY_BODY:
                    self.body.append(data)
                else:
                    self.body = None
                    self.replayable = False
            return
        if self.body is not None:
            self.body.append(data)
            self.body_size += len(data)
            if self.body_size > MAX_REPLAY_BODY:
                self.client.pause(1)

    def on_client_complete(self) -> None:
        if self.chunked:
            self._send_body(b"0\r\n\r\n")
        self.req_done = True
        if self.conn is not None and not self.resp_started:
            self.deadline = self.client.hub.now + self.cluster.response_header_timeout

    def on_client_tunnel(self, data: bytes) -> None:
        """Raw bytes after an upgrade request: forwarded as-is once the upstream switched
        protocols (101), held until then, and dropped if it declines."""
        if self.status == 101:
            conn = self.conn
            if conn is not None:
                conn.send(data)
            return
        early = self.early
        if early is None:
            early = self.early = []
        early.append(data)
        if sum(len(b) for b in early) > MAX_REPLAY_BODY:
            self.client.pause(1)  # resumed when the exchange ends

    # --- response side ------------------------------------------------------
    def on_response_head(self, conn: UpstreamConnection, status: int, raw: bytes) -> None:
        """`raw` is the upstream head exactly as received (validated by llhttp)."""
        if self.spare_ep is not None:
            interim = 100 <= status < 200 and status != 101
            if conn is not self.conn and conn is not self.spare:
                return
            if status >= 500 and self._drop_try(conn):
                return  # the other try may still answer well
            if interim:
                if conn is not self.conn:
                    return  # the first try's interim responses only
            elif conn is self.spare:
                self._spare_wins()
        if 100 <= status < 200 and status != 101:
            # Interim response (100 Continue, 103): forward and keep waiting.
            self.client.transport_write(response_head.fix_version(raw))
            return
        self._settle()
        plan = response_head.rewrite(
            raw, status, self.is_head, self.http11, self.keep_alive, self.upgrade)
        if plan is None:
            # Framing-ambiguous upstream response: never forward it (smuggling risk).
            self.on_upstream_error(conn)
            conn.close()
            return
        self.status = status
        self.resp_started = True
        self.deadline = self.t0 + self.cluster.request_timeout
        ep = self.endpoint
        assert ep is not None
        if status >= 500:
            self.cluster.record_failure(ep)
        elif ep.consecutive_failures:
            ep.consecutive_failures = 0
        head, self.resp_chunked, self.eof_body, self.keep_alive = plan
        hsts = self.client.ctx.hsts
        if hsts and b"strict-transport-security:" not in head.lower():
            head = head[:-2] + hsts + b"\r\n"  # the upstream's own policy wins
        if (self.replayable and self.method in IDEMPOTENT and status != 101
                and not self.is_head and not self.eof_body and not self.upgrade):
            self.held = [head]
            self.held_size = 0
            return
        self.client.transport_write(head)
        if status == 101:
            self.deadline = INF
            self.client.start_tunnel(conn)
            early = self.early
            if early:
                self.early = None
                conn.send(b"".join(early))
                self.client.resume(1)
        elif self.is_head:
            keep = conn.parser.should_keep_alive()
            conn.reset_parser()
            self.on_response_complete(conn, keep)

    def on_response_body(self, data: bytes) -> None:
        held = self.held
        if held is not None:
            if self.resp_chunked:
                held += (b"%x\r\n" % len(data), data, b"\r\n")
            else:
                held.append(data)
            self.held_size += len(data)
            if self.held_size > HOLD_LIMIT:
                self.held = None
                self.client.transport_writelines(held)
            return
        if self.resp_chunked:
            self.client.transport_writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self.client.transport_write(data)

    def on_response_complete(self, conn: UpstreamConnection, keep_alive: bool) -> None:
        if self.status < 200 or self.done:
            return  # end of an interim 1xx message, or of a 101 head (now a tunnel)
        held = self.held
        if held is not None:
            self.held = None
            if self.resp_chunked:
                held.append(b"0\r\n\r\n")
            self.client.transport_writelines(held)
        elif self.resp_chunked:
            self.client.transport_write(b"0\r\n\r\n")
        self.early = None  # an upgrade the upstream declined: its tunnel bytes go nowhere
        if keep_alive and self.req_done and not self.upgrade:
            upstream.checkin(conn)
        else:
            conn.close()
        self.conn = None
        self._finish()

    def on_upstream_lost(self, conn: UpstreamConnection) -> None:
        if self.done or self._drop_try(conn):
            return
        self.conn = None
        if self.resp_started and self.held is not None:
            # Nothing reached the client yet: forget the partial response and retry.
            self._unstart()
            if self.endpoint is not None:
                self.cluster.record_failure(self.endpoint)
            self._release_endpoint()
            self._retry_or_fail(502, budgeted=True, needs_idempotent=True)
            return
        if self.resp_started:
            if self.eof_body:
                # Body delimited by connection close: that close is the end.
                self._on_eof_body_end()
                return
            self._abort()
            return
        ep = self.endpoint
        stale = conn.reused and not conn.got_bytes
        if stale and ep is not None and self.replayable and self.stale_retries < 2:
            # The pooled connection was closed by the upstream before it answered
            # (idle-timeout race): not the endpoint's fault and nothing was processed.
            # Same endpoint, fresh connection; pooled siblings are likely stale too.
            self.stale_retries += 1
            upstream.close_idle(ep)
            asyncio.get_running_loop().create_task(self._connect(ep))
            return
        if ep is not None and not stale:
            self.cluster.record_failure(ep)
        self._release_endpoint()
        self._retry_or_fail(502, budgeted=True, needs_idempotent=True)

    def _on_eof_body_end(self) -> None:
        if self.resp_chunked:
            self.client.transport_write(b"0\r\n\r\n")
        self._finish()

    def on_upstream_error(self, conn: UpstreamConnection) -> None:
        """The upstream sent something unparseable or framing-ambiguous."""
        if self.done or self._drop_try(conn):
            return
        conn.exchange = None
        self.conn = None
        if self.resp_started and self.held is None:
            self._abort()
            return
        self._unstart()
        ep = self.endpoint
        if ep is not None:
            self.cluster.record_failure(ep)
        self._fail(502)

    def on_timeout(self) -> None:
        self._settle()
        conn = self.conn
        if conn is not None:
            conn.close()
            self.conn = None
        if self.resp_started and self.held is None:
            self._abort()
        else:
            self._unstart()
            self._fail(504)

    def _unstart(self) -> None:
        """Drop a held (never forwarded) response, as if it had not begun."""
        self.held = None
        self.held_size = 0
        self.resp_started = False
        self.status = 0

    # --- retries and endings --------------------------------------------------
    def _retry_or_fail(self, status: int, budgeted: bool, needs_idempotent: bool = False) -> None:
        ok = (
            self.replayable
            and self.attempts <= self.cluster.max_retries
            and (not needs_idempotent or self.method in IDEMPOTENT)
            and not self.upgrade
        )
        if ok and (not budgeted or self.cluster.budget.try_spend()):
            self._reattach(count_retry=True)
            return
        self._fail(status)

    def _reattach(self, count_retry: bool) -> None:
        ep = self.cluster.pick(self.pin, self.tried)
        if ep is None:
            self._fail(503 if self.attempts == 0 else 502)
            return
        if count_retry:
            ep.stats.retries += 1
        self._attach(ep)

    def _release_endpoint(self) -> None:
        ep = self.endpoint
        if ep is not None:
            ep.inflight -= 1
            self.endpoint = None
            self._end_try(ep, self.status)

    def _end_try(self, ep: EndpointState, status: int) -> None:
        trace = self.trace
        if trace is not None:
            trace.end_try(ep.id, status)

    def _end_trace(self, status: int) -> None:
        """The exchange is over: its spans go to the exporter (sampled requests only)."""
        trace = self.trace
        if trace is not None:
            self.trace = None
            trace.finish(self.cluster.name, status)

    def _fail(self, status: int) -> None:
        """Answer with a proxy-generated error (nothing was sent to the client yet)."""
        self._settle()
        ep = self.endpoint
        if ep is None and self.tried:
            ep = self._last_endpoint()
        if ep is not None:
            ep.stats.observe(status, _now() - self.t0)
        self._release_endpoint()
        self.status = status
        self.done = True
        if self.trace is not None:
            self._end_trace(status)
        self.client.exchange_failed(self, status)

    def _last_endpoint(self) -> EndpointState | None:
        for ep in self.cluster.endpoints:
            if ep.id == self.tried[-1]:
                return ep
        return None

    def _finish(self) -> None:
        if self.timer is not None or self.spare_ep is not None:
            self._settle()
        ep = self.endpoint
        if ep is not None:
            latency = _now() - self.t0
            ep.stats.observe(self.status, latency)
            if accesslog.sample:
                accesslog.maybe_log(self.method, self.cluster.name, ep.id, self.status, latency)
            ep.inflight -= 1
            self.endpoint = None
            if self.trace is not None:
                self._end_try(ep, self.status)
        self.done = True
        if self.trace is not None:
            self._end_trace(self.status)
        self.client.exchange_done(self)

    def _abort(self) -> None:
        """Response already partly sent: the only honest signal left is closing."""
        self._settle()
        ep = self.endpoint
        if ep is not None:
            ep.stats.observe(self.status or 502, _now() - self.t0)
        self._release_endpoint()
        self.done = True
        if self.trace is not None:
            self._end_trace(self.status or 502)
        self.client.abort()

    def cancel(self) -> None:
        """The client went away: drop the upstream side too."""
        if self.done:
            return
        self.done = True
        self._settle()
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.close()
        self._release_endpoint()
        if self.trace is not None:
            self._end_trace(0)
