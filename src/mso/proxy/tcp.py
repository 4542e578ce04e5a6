"""L4 (TCP) listener mode: splice bytes between a client and a balanced endpoint.

Both directions are asyncio protocols with pause/resume for flow control (duck-typed:
this module is compiled by mypyc, which cannot subclass asyncio.Protocol).  A failed
connect is retried on another endpoint before the client is dropped.
"""
from __future__ import annotations

import asyncio
from typing import Callable, Final, cast
from dataclasses import dataclass

from .balancer import ClusterState, EndpointState

MAX_PENDING: Final = 256 * 1024


@dataclass
class TcpContext:
    """Mutated in place by set_table so live listeners pick up new clusters."""

    cluster: ClusterState
    attempts: int = 3


class _UpstreamSide:
    def __init__(self, client: TcpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.eof = False  # the upstream has finished sending

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.client.write(data)  # a discarding stand-in once the client is gone

    def eof_received(self) -> bool:
        # A half-close is passed on (keeping the connection open for the other
        # direction); once both sides have finished sending, both transports close.
        # asyncio never closes a transport whose protocol kept it open after EOF, so a
        # connection shut down in both directions would otherwise stay, and count as
        # in flight, for ever (a drain then waited its whole grace period).
        self.eof = True
        # The replica has finished with this connection (a process that exits closes
        # its sockets, so a dead replica's connections end here too): it no longer
        # counts as in flight, even while the client keeps its end open. Without this
        # an idle pooled client held a drain of the replica (or of the next process
        # under the same id) for its whole grace period.
        self.client.release()
        t = self.client.transport
        if self.client.half_closed or t is None or not t.can_write_eof():
            if t is not None:
                t.close()
            return False
        t.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.upstream_lost()

    def pause_writing(self) -> None:
        t = self.client.transport
        if t is not None:
            t.pause_reading()

    def resume_writing(self) -> None:
        t = self.client.transport
        if t is not None:
            t.resume_reading()


def _discard(data: bytes) -> None:
    pass


class TcpClient:
    def __init__(self, ctx: TcpContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        # Bound `write` methods of both transports, looked up once: bytes are relayed
        # per read, and this is all the per-read work there is.
        self.write: Callable[[bytes], object] = _discard
        self.up_write: Callable[[bytes], object] | None = None
        self.up: _UpstreamSide | None = None
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.endpoint: EndpointState | None = None
        self.closed = False
        self.half_closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.write = self.transport.write
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        cluster = self.ctx.cluster
        tried: tuple[str, ...] = ()
        for _ in range(self.ctx.attempts):
            ep = cluster.pick(None, tried)
            if ep is None or self.closed:
                break
            tried += (ep.id,)
            ep.stats.requests += 1
            try:
                up = _UpstreamSide(self)
                factory = cast(Callable[[], asyncio.Protocol], lambda: up)  # noqa: B023
                await asyncio.wait_for(loop.create_connection(factory, ep.host, ep.port),
                                       cluster.connect_timeout)
            except (OSError, asyncio.TimeoutError):
                ep.stats.connect_errors += 1
                cluster.record_failure(ep)
                continue
            cluster.record_success(ep)
            self._attached(ep, up)
            return
        if self.transport is not None:
            self.transport.close()

    def _attached(self, ep: EndpointState, up: _UpstreamSide) -> None:
        if self.closed:
            assert up.transport is not None
            up.transport.close()
            return
        if not up.eof:  # an upstream that already ended the connection is done with it
            self.endpoint = ep
            ep.inflight += 1
        self.up = up
        assert up.transport is not None
        self.up_write = up.transport.write
        if self.pending:
            up.transport.writelines(self.pending)
            self.pending = []
            self.pending_size = 0
            if self.transport is not None:
                self.transport.resume_reading()
        if self.half_closed and up.transport.can_write_eof():
            up.transport.write_eof()

    def data_received(self, data: bytes) -> None:
        up_write = self.up_write
        if up_write is not None:
            up_write(data)
            return
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size > MAX_PENDING and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.half_closed = True  # the client has finished sending
        up = self.up
        if up is None:
            return True  # passed on once the upstream is connected (_attached)
        if up.eof or up.transport is None or not up.transport.can_write_eof():
            if up.transport is not None:
                up.transport.close()
            return False  # both directions are done: close (see _UpstreamSide)
        up.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.write = _discard
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.close()
        self.release()

    def upstream_lost(self) -> None:
        self.up_write = _discard
        self.release()
        if self.transport is not None and not self.closed:
            self.transport.close()

    def release(self) -> None:
        """The connection no longer counts toward its endpoint's in-flight gauge."""
        ep = self.endpoint
        if ep is not None:
            self.endpoint = None
            ep.inflight -= 1

    def pause_writing(self) -> None:
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self.up
        if up is not None and up.transport is not None:
            up.transport.resume_reading()
