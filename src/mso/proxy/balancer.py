"""Endpoint selection: weighted subsets, round robin / least request, retry budget.

Pure apart from the live counters it keeps (in-flight, ejection state); time
comes from an injected clock so the logic is testable without sleeping.
Subsets are split with nginx's smooth weighted round robin, which is exact and
deterministic: at 90/10 every window of 10 picks holds exactly 9 stable ones.
"""
from __future__ import annotations

import random
from typing import Any, Callable

from .metrics import EndpointStats, Registry
from .table import ClusterSpec, EndpointSpec, OutlierPolicy

Clock = Callable[[], float]


class EndpointState:
    """Live state of one endpoint; survives table changes while its id+address stay."""

    __slots__ = (
        "id", "host", "port", "subset", "stats", "inflight", "draining",
        "ejected_until", "consecutive_failures", "ejections", "idle", "pooled",
    )

    def __init__(self, spec: EndpointSpec, subset: str, stats: EndpointStats) -> None:
        self.id = spec.id
        self.host = spec.host
        self.port = spec.port
        self.subset = subset
        self.stats = stats
        self.inflight = 0
        self.draining = False
        self.ejected_until = 0.0
        self.consecutive_failures = 0
        self.ejections = 0
        # Idle pooled upstream connections (owned by mso.proxy.upstream).
        self.idle: list[Any] = []
        self.pooled = True  # its cluster's `pool` (build_cluster sets it)

    def available(self, now: float) -> bool:
        return not self.draining and self.ejected_until <= now


class SubsetState:
    __slots__ = ("name", "weight", "endpoints", "current", "rr")

    def __init__(self, name: str, weight: int, endpoints: list[EndpointState]) -> None:
        self.name = name
        self.weight = weight
        self.endpoints = endpoints
        self.current = 0  # smooth-WRR running weight
        self.rr = 0


class RetryBudget:
    """Token bucket: every request earns `ratio` tokens, every retry spends one."""

    __slots__ = ("tokens", "ratio", "cap")

    def __init__(self, ratio: float = 0.2, initial: float = 10.0, cap: float = 100.0) -> None:
        self.tokens = initial
        self.ratio = ratio
        self.cap = cap

    def earn(self) -> None:
        t = self.tokens + self.ratio
        self.tokens = t if t < self.cap else self.cap

    def try_spend(self) -> bool:
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ClusterState:
    """Live balancing state of one cluster."""

    def __init__(self, spec: ClusterSpec, subsets: list[SubsetState], clock: Clock) -> None:
        self.spec = spec
        self.name = spec.name
        self.subsets = subsets
        self.by_subset = {s.name: s for s in subsets}
        self.endpoints = [e for s in subsets for e in s.endpoints]
        self.least_request = spec.balancer == "least_request"
        self.outlier: OutlierPolicy = spec.outlier
        self.timeouts = spec.timeouts
        # Copies as plain floats: read per request, and native attributes are cheaper than
        # attribute lookups on the (interpreted) Timeouts dataclass.
        self.request_timeout: float = spec.timeouts.request
        self.response_header_timeout: float = spec.timeouts.response_header
        self.connect_timeout: float = spec.timeouts.connect
        self.per_try_timeout: float = spec.timeouts.per_try
        # When an idempotent request gets its second try (0: never): the hedge delay if
        # set and shorter, else the per-try timeout.
        hedge = spec.timeouts.hedge
        per_try = spec.timeouts.per_try
        self.second_try_after: float = min(hedge, per_try) if hedge and per_try \
            else (hedge or per_try)
        self.max_retries = spec.retries
        self.budget = RetryBudget()
        self.clock = clock
        self._single = subsets[0] if len(subsets) == 1 else None
        # Fast path bookkeeping: until `_clean_after` no endpoint is ejected, and
        # `_draining` counts drained endpoints; when both are clear no checks are needed.
        self._draining = sum(1 for e in self.endpoints if e.draining)
        self._clean_after = max((e.ejected_until for e in self.endpoints), default=0.0)
        self._fast = [s for s in subsets if s.endpoints and s.weight > 0]
        self._fast_total = sum(s.weight for s in self._fast)

    def set_draining(self, ep: EndpointState) -> None:
        if not ep.draining:
            ep.draining = True
            self._draining += 1

    def pick(self, pin: str | None = None, exclude: tuple[str, ...] = ()) -> EndpointState | None:
        """Choose an endpoint: pinned subset if usable, else by weight; None if none ready."""
        now = self.clock()
        if pin is None and not exclude and not self._draining and now >= self._clean_after:
            return self._pick_fast()
        if pin is not None:
            sub = self.by_subset.get(pin)
            if sub is not None:
                ep = self._pick_in(sub, now, exclude)
                if ep is not None:
                    return ep
        if self._single is not None:
            ep = self._pick_in(self._single, now, exclude)
            if ep is None and exclude:
                ep = self._pick_in(self._single, now, ())
            return ep
        ep = self._pick_weighted(now, exclude)
        if ep is None and exclude:
            ep = self._pick_weighted(now, ())
        return ep

    def _pick_fast(self) -> EndpointState | None:
        # Every endpoint is available: smooth WRR and round robin without checks.
        subs = self._fast
        if not subs:
            return self._pick_weighted(self.clock(), ())
        best = subs[0]
        if len(subs) > 1:
            for s in subs:
                s.current += s.weight
                if s.current > best.current:
                    best = s
            best.current -= self._fast_total
        eps = best.endpoints
        if self.least_request and len(eps) > 1:
            a, b = random.sample(eps, 2)
            return a if a.inflight <= b.inflight else b
        i = best.rr
        best.rr = (i + 1) % len(eps)
        return eps[i % len(eps)]

    def _pick_weighted(self, now: float, exclude: tuple[str, ...]) -> EndpointState | None:
        # Smooth weighted round robin over the subsets that can serve right now.
        usable = [s for s in self.subsets if self._has_available(s, now, exclude)]
        if not usable:
            return None
        total = 0
        best: SubsetState | None = None
        for s in usable:
            s.current += s.weight
            total += s.weight
            if best is None or s.current > best.current:
                best = s
        assert best is not None
        if total == 0:
            # Every usable subset has weight 0: serve anyway rather than fail.
            return self._pick_in(usable[0], now, exclude)
        best.current -= total
        return self._pick_in(best, now, exclude)

    @staticmethod
    def _has_available(s: SubsetState, now: float, exclude: tuple[str, ...]) -> bool:
        for e in s.endpoints:
            if e.available(now) and e.id not in exclude:
                return True
        return False

    def _pick_in(
        self, sub: SubsetState, now: float, exclude: tuple[str, ...]
    ) -> EndpointState | None:
        eps = sub.endpoints
        n = len(eps)
        if n == 0:
            return None
        if self.least_request and n > 1:
            cands = [e for e in eps if e.available(now) and e.id not in exclude]
            if len(cands) <= 1:
                return cands[0] if cands else None
            a, b = random.sample(cands, 2)
            return a if a.inflight <= b.inflight else b
        start = sub.rr
        for i in range(n):
            e = eps[(start + i) % n]
            if e.available(now) and e.id not in exclude:
                sub.rr = (start + i + 1) % n
                return e
        return None

    def ejected_count(self, now: float) -> int:
        return sum(1 for e in self.endpoints if e.ejected_until > now)

    def record_failure(self, ep: EndpointState) -> bool:
        """Count a 5xx or connect failure; eject when the policy says so. True if ejected."""
        ep.consecutive_failures += 1
        pol = self.outlier
        if ep.consecutive_failures < pol.consecutive_failures:
            return False
        now = self.clock()
        if ep.ejected_until > now:
            return False
        allowed = int(len(self.endpoints) * pol.max_ejected_percent / 100.0)
        if self.ejected_count(now) >= allowed:
            return False
        duration = min(pol.base_ejection_s * (2 ** ep.ejections), pol.max_ejection_s)
        ep.ejections += 1
        ep.stats.ejections += 1
        ep.ejected_until = now + duration
        self._clean_after = max(self._clean_after, ep.ejected_until)
        ep.consecutive_failures = 0
        return True

    @staticmethod
    def record_success(ep: EndpointState) -> None:
        ep.consecutive_failures = 0


def build_cluster(
    spec: ClusterSpec,
    previous: dict[tuple[str, str, int], EndpointState],
    registry: Registry,
    clock: Clock,
) -> ClusterState:
    """Make the live state for `spec`, reusing endpoint states keyed by (id, host, port)."""
    subsets = []
    for sub in spec.subsets:
        eps = []
        for e in sub.endpoints:
            st = previous.get((e.id, e.host, e.port))
            if st is None:
                st = EndpointState(e, sub.name, registry.get(spec.name, sub.name, e.id))
            elif st.subset != sub.name:
                st.subset = sub.name
                st.stats = registry.get(spec.name, sub.name, e.id)
            st.pooled = spec.pool
            eps.append(st)
        subsets.append(SubsetState(sub.name, sub.weight, eps))
    return ClusterState(spec, subsets, clock)
