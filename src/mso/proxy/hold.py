"""Scale to zero in the proxy: requests wait for a replica instead of getting a 503.

A cluster whose table entry has `hold` (a service with `autoscale.min: 0`) and no endpoint
to pick does not fail the request: the exchange is parked here, its body (up to the
replay limit) kept by the exchange as for a retry, and the control plane is told at once
(the `held` control operation below, a long poll). When a table arrives in which the
cluster has an endpoint, the parked exchanges are attached to it in arrival order.

Bounds, per proxy process and cluster (`hold.queue`, `hold.timeout` in the table; the
manifest's `autoscale.hold`, defaults 100 and 30 s): the request past the queue's bound
is answered at once, and a request that waited `timeout` is answered then, both with a
503 carrying `Retry-After` (1 s when the queue is full: a replica is on its way; 5 s
after a timeout: it is slow to start). A client that goes away while waiting just leaves
the queue (its exchange is cancelled as usual).

Why a long poll (`{"op": "held", "since": N, "wait": S}`) rather than the metrics the
autoscaler samples every second: a request at zero should start a replica within
milliseconds, not at the next sample. `seq` counts requests ever parked; the control
plane passes the last `seq` it saw and is answered as soon as a newer one is parked (or
after `wait` seconds), so requests still waiting do not wake it again and again; any
other `seq` (a restarted proxy counts from 0) answers at once.

This module is plain Python (not compiled with the hot path): it runs only for the few
requests that arrive at zero. The hooks in the request path are one call each: in
`Exchange.start` (park instead of 503), in `Runtime._apply` (release on a new table) and
in `ClientConnection.exchange_failed` (the 503 with Retry-After).
"""
from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from .balancer import ClusterState
    from .exchange import Exchange

#: Retry-After (seconds) of the 503 for a full queue, and for a request that timed out.
RETRY_FULL = 1
RETRY_TIMEOUT = 5
#: Longest `wait` of one `held` call.
MAX_WAIT = 60.0


class HoldBook:
    """The parked exchanges of one proxy process, by cluster name."""

    def __init__(self) -> None:
        self.queues: dict[str, deque[Exchange]] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.timed_out: set[int] = set()
        self.dropped: set[int] = set()  # its service was removed or no longer scales to zero
        self.seq = 0  # requests ever parked
        self.released = 0  # requests ever sent on from here
        self.refused = 0  # 503s: queue full or timed out
        self._changed: asyncio.Event | None = None

    # -- the request path ------------------------------------------------------------------
    def park(self, ex: Exchange) -> bool:
        """Keep `ex` until its cluster has an endpoint; False when it cannot wait (no
        `hold` for its cluster, or the queue is full: the caller answers 503)."""
        spec = ex.cluster.spec.hold
        if spec is None:
            return False
        name = ex.cluster.name
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = deque()
        elif queue and queue[0].done:
            self._prune(name)
        if len(queue) >= spec.queue:
            self.refused += 1
            return False
        queue.append(ex)
        ex.deadline = float("inf")  # the hold timeout below answers it, with Retry-After
        loop = asyncio.get_running_loop()
        self.timers[id(ex)] = loop.call_later(spec.timeout, self._expire, ex)
        self.seq += 1
        if self._changed is not None:
            self._changed.set()
        return True

    def _prune(self, name: str) -> None:
        queue = self.queues[name]
        alive = deque(ex for ex in queue if not ex.done)
        for ex in queue:
            if ex.done:
                self._untime(ex)
        self.queues[name] = alive

    def _untime(self, ex: Exchange) -> None:
        timer = self.timers.pop(id(ex), None)
        if timer is not None:
            timer.cancel()

    def _expire(self, ex: Exchange) -> None:
        self.timers.pop(id(ex), None)
        queue = self.queues.get(ex.cluster.name)
        if queue is not None and ex in queue:
            queue.remove(ex)
        if ex.done:
            return
        self.refused += 1
        self.timed_out.add(id(ex))
        ex._fail(503)

    def release(self, clusters: Mapping[str, ClusterState], now: float) -> None:
        """A new table was applied: send on what can go, in arrival order."""
        for name in list(self.queues):
            queue = self.queues[name]
            cluster = clusters.get(name)
            while queue:
                ex = queue[0]
                if ex.done:
                    queue.popleft()
                    self._untime(ex)
                    continue
                if cluster is None or cluster.spec.hold is None:
                    # The service is gone, or no longer scales to zero: no wait any more.
                    queue.popleft()
                    self._untime(ex)
                    ep = cluster.pick(ex.pin) if cluster is not None else None
                    if cluster is not None and ep is not None:
                        ex.cluster = cluster
                        self._send(ex, ep, now)
                        continue
                    # (the exchange keeps its old cluster: its 503 says why, with Retry-After)
                    self.refused += 1
                    self.dropped.add(id(ex))
                    ex._fail(503)
                    continue
                ex.cluster = cluster
                ep = cluster.pick(ex.pin)
                if ep is None:
                    break  # still nothing ready: keep waiting
                queue.popleft()
                self._untime(ex)
                self._send(ex, ep, now)
            if not queue:
                del self.queues[name]

    def _send(self, ex: Exchange, ep: Any, now: float) -> None:
        self.released += 1
        ex.deadline = now + ex.cluster.request_timeout
        ex._attach(ep)

    # -- the 503 ---------------------------------------------------------------------------
    def refusal(self, ex: Exchange) -> bytes:
        """The 503 of a request that could not wait (queue full) or waited too long."""
        timed_out = id(ex) in self.timed_out
        self.timed_out.discard(id(ex))
        dropped = id(ex) in self.dropped
        self.dropped.discard(id(ex))
        spec = ex.cluster.spec
        hold = spec.hold
        if dropped:
            why, retry = ("it was removed, or no longer scales to zero, while this request "
                          "waited for it", RETRY_FULL)
        elif timed_out and hold is not None:
            why, retry = (f"no replica was ready within {hold.timeout:g}s (it is scaled to "
                          f"zero and starting)", RETRY_TIMEOUT)
        else:
            why, retry = ("it is starting from zero replicas and too many requests are "
                          "waiting for it", RETRY_FULL)
        body = f"503 Service Unavailable: {spec.service}: {why}\n".encode("utf-8", "replace")
        return (
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\nretry-after: {retry}\r\n"
            "connection: close\r\n\r\n"
        ).encode() + body

    # -- the control operation ---------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return {name: sum(1 for ex in q if not ex.done) for name, q in self.queues.items()
                if any(not ex.done for ex in q)}

    def report(self) -> dict[str, Any]:
        return {"seq": self.seq, "held": self.counts(), "released": self.released,
                "refused": self.refused}

    async def wait(self, since: int, wait: float) -> dict[str, Any]:
        """As soon as a request newer than `since` is parked (now, or within `wait`). A
        `since` other than the current `seq` answers at once: older, or newer (this
        proxy restarted and counts from 0 again)."""
        if self.seq == since and wait > 0:
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(wait, MAX_WAIT))
            except asyncio.TimeoutError:
                pass
        return self.report()


#: The book of this process (one proxy process serves one runtime).
BOOK = HoldBook()


def parse_wait(msg: Mapping[str, Any]) -> tuple[int, float]:
    """`since` and `wait` of a `held` request (ValueError when malformed)."""
    since, wait = msg.get("since", -1), msg.get("wait", 0.0)
    if isinstance(since, bool) or not isinstance(since, int):
        raise ValueError("held 'since' must be an integer")
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
        raise ValueError("held 'wait' must be a number >= 0")
    return since, float(wait)


def merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' reports as one (the worker pool): counts summed."""
    held: dict[str, int] = {}
    for r in reports:
        for name, n in (r.get("held") or {}).items():
            held[name] = held.get(name, 0) + int(n)
    return {"seq": sum(int(r.get("seq") or 0) for r in reports), "held": held,
            "released": sum(int(r.get("released") or 0) for r in reports),
            "refused": sum(int(r.get("refused") or 0) for r in reports)}
