"""Limits at the edge: per-route rate limits and body size, per-client connection limits.

A route of the table may carry `rate_limit: {rate, burst, by}` (a token bucket per client
address, or per value of a request header) and `max_body` (bytes); a listener may carry
`max_client_connections`. The client connection asks this module at three points only,
and only when the matched route or the listener has limits (a route without them costs
one `is None` test per request):

* `RouteLimits.admit` once a request head is parsed: `429 Too Many Requests` with
  `Retry-After` (whole seconds until the bucket holds a token again), or `413 Content Too
  Large` when the Content-Length says so; else the budget the body may use, which the
  connection counts down as chunks arrive (`413` as soon as a chunked body goes over,
  nothing buffered: the upstream sees the request cut off);
* `ClientConnections.enter`/`leave` as connections open and close: over the limit, the
  connection gets `429` with `connection: close` before anything is read.

Decisions:

* Buckets are per proxy process (as nginx's `limit_req` without a shared zone across
  hosts): with `--workers N`, or several gateway replicas on Kubernetes, each enforces
  the limit on the traffic it sees. They survive route-table pushes (every readiness
  change pushes one) while the route keeps its limit, so a push never refills them.
* A request without the header a limit is keyed by counts against its client address
  (kept apart from header values), so leaving the header out is no way around the limit.
* The number of keys is bounded (MAX_KEYS per route): full buckets are dropped first
  (a full bucket is the same as none); past that, the oldest half goes.
* The clock is passed in (`now`, monotonic seconds), so the bucket is tested without
  sleeping.
"""
from __future__ import annotations

import math
from typing import Any, Final

#: Most client keys one route's limiter remembers (see the module docstring).
MAX_KEYS: Final = 16384
NO_LIMIT: Final = -1


class Bucket:
    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """Token buckets of one route: `rate` tokens per second, at most `burst`."""

    def __init__(self, rate: float, burst: int, header: bytes = b"") -> None:
        self.rate = rate
        self.burst = float(burst)
        self.header = header  # lower-case header name; b"": by client address
        self.buckets: dict[bytes, Bucket] = {}

    def same(self, rate: float, burst: int, header: bytes) -> bool:
        return self.rate == rate and self.burst == float(burst) and self.header == header

    def take(self, key: bytes, now: float) -> float:
        """Take one token for `key`: 0.0 when there was one, else the seconds until there
        is one again (the request is refused)."""
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_KEYS:
                self.sweep(now)
            self.buckets[key] = Bucket(self.burst - 1.0, now)
            return 0.0
        tokens = bucket.tokens + (now - bucket.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket.stamp = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return 0.0
        bucket.tokens = tokens
        return (1.0 - tokens) / self.rate

    def sweep(self, now: float) -> None:
        """Forget full buckets; if that is not enough, the oldest half."""
        rate, burst = self.rate, self.burst
        full = [k for k, b in self.buckets.items() if b.tokens + (now - b.stamp) * rate >= burst]
        for k in full:
            del self.buckets[k]
        if len(self.buckets) >= MAX_KEYS:
            keys = list(self.buckets)
            for k in keys[:len(keys) // 2]:
                del self.buckets[k]


class RouteLimits:
    """The limits of one gateway route (shared by the listeners that serve it) and what
    they refused."""

    def __init__(self, label: str, service: str, rate: RateLimiter | None,
                 max_body: int) -> None:
        self.label = label  # host + path, the metrics' `route`
        self.service = service
        self.rate = rate
        self.max_body = max_body  # NO_LIMIT or bytes
        self.rate_limited = 0
        self.body_too_large = 0

    def admit(self, peer: bytes, headers: list[tuple[bytes, bytes]],
              content_length: bytes | None, now: float) -> int:
        """Raise Refused, or return the body budget (NO_LIMIT: none)."""
        limiter = self.rate
        if limiter is not None:
            key = b""
            name = limiter.header
            if name:
                for n, v in headers:
                    if len(n) == len(name) and n.lower() == name:
                        key = b"h:" + v.strip()
                        break
            if not key:
                key = b"a:" + peer
            wait = limiter.take(key, now)
            if wait > 0.0:
                self.rate_limited += 1
                raise Refused(429, too_many_requests(wait, "rate limit of this route"))
        limit = self.max_body
        if limit >= 0 and content_length is not None and int(content_length) > limit:
            self.body_too_large += 1
            raise Refused(413, body_too_large(limit))
        return limit

    def over_body(self) -> Refused:
        """A (chunked) body that went over `max_body`, found while it streams."""
        self.body_too_large += 1
        return Refused(413, body_too_large(self.max_body))


class Refused(Exception):
    """A request refused by a limit: the status and the whole response to answer with.
    Internal, like http_server.Reject: raised from the parser's callbacks and answered by
    the client connection; it never leaves the proxy."""

    def __init__(self, status: int, response: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.response = response


def too_many_requests(wait: float, what: str) -> bytes:
    seconds = max(1, math.ceil(wait))
    body = b"429 Too Many Requests: %s\n" % what.encode()
    return (b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n"
            b"retry-after: %d\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (seconds, len(body))) + body


def body_too_large(limit: int) -> bytes:
    body = b"413 Content Too Large: this route takes at most %d bytes of body\n" % limit
    return (b"HTTP/1.1 413 Content Too Large\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)) + body


TOO_MANY_CONNECTIONS: Final = too_many_requests(1.0, "too many connections from your address")


class ClientConnections:
    """Open connections per client address, over every listener that has a limit."""

    def __init__(self) -> None:
        self.open: dict[bytes, int] = {}
        self.refused = 0

    def enter(self, peer: bytes, limit: int) -> bool:
        n = self.open.get(peer, 0)
        if n >= limit:
            self.refused += 1
            return False
        self.open[peer] = n + 1
        return True

    def leave(self, peer: bytes) -> None:
        n = self.open.get(peer, 0) - 1
        if n > 0:
            self.open[peer] = n
        else:
            self.open.pop(peer, None)


class Limits:
    """Every route's limits in one process, kept across route tables (by route label) so
    that neither the buckets nor the counters start over when a table is pushed."""

    def __init__(self) -> None:
        self.routes: dict[str, RouteLimits] = {}
        self.connections = ClientConnections()

    def for_route(self, label: str, service: str, rate: float, burst: int, header: str,
                  max_body: int) -> RouteLimits | None:
        """The route's limits (the same object as before when they did not change), or
        None when it has none."""
        old = self.routes.get(label)
        if rate <= 0.0 and max_body < 0:
            return None
        hname = header.lower().encode("latin-1")
        if old is not None and old.max_body == max_body and old.service == service and (
                old.rate.same(rate, burst, hname) if old.rate is not None else rate <= 0.0):
            return old  # unchanged (or the other gateway listener of the same table)
        limiter: RateLimiter | None = None
        if rate > 0.0:
            if old is not None and old.rate is not None and old.rate.same(rate, burst, hname):
                limiter = old.rate
            else:
                limiter = RateLimiter(rate, burst, hname)
        new = RouteLimits(label, service, limiter, max_body)
        if old is not None:
            new.rate_limited, new.body_too_large = old.rate_limited, old.body_too_large
        self.routes[label] = new
        return new

    def snapshot(self) -> dict[str, Any]:
        """The `limits` part of the metrics SNAPSHOT."""
        return {"routes": {label: {"service": r.service, "rate_limited": r.rate_limited,
                                   "body_too_large": r.body_too_large}
                           for label, r in sorted(self.routes.items())},
                "connections": {"refused": self.connections.refused,
                                "open": sum(self.connections.open.values()),
                                "clients": len(self.connections.open)}}


def merge(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the `limits` parts of several workers' snapshots."""
    routes: dict[str, dict[str, Any]] = {}
    conns = {"refused": 0, "open": 0, "clients": 0}
    for snap in snaps:
        part = snap.get("limits") or {}
        for label, r in (part.get("routes") or {}).items():
            cur = routes.setdefault(label, {"service": r.get("service", ""),
                                            "rate_limited": 0, "body_too_large": 0})
            cur["rate_limited"] += r.get("rate_limited", 0)
            cur["body_too_large"] += r.get("body_too_large", 0)
        for k in conns:
            conns[k] += (part.get("connections") or {}).get(k, 0)
    return {"routes": routes, "connections": conns}


def route_label(host: str | None, path: str) -> str:
    return (host or "") + path
