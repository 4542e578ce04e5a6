"""In-process traffic counters and their SNAPSHOT rendering.

The hot path only bumps plain numbers in an `EndpointStats`; the SNAPSHOT dict of
the control protocol is rendered on demand, and the Prometheus exposition is made from
it by prometheus-client collectors (exposition.py).
"""
from __future__ import annotations

from typing import Any, Final, Iterable, Mapping

# Log-spaced upper bounds in milliseconds; the last count is the +Inf bucket.
LATENCY_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000,
)
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_NB: Final = len(LATENCY_BUCKETS_MS) + 1  # buckets per histogram, +Inf included


def bucket_index(ms: float) -> int:
    """Index of the first bucket whose bound is >= ms (bisect_left), scanning from the
    fast end: nearly every proxied response lands in the first buckets, and compiled
    this beats a call to bisect."""
    i = 0
    for bound in LATENCY_BUCKETS_MS:
        if ms <= bound:
            return i
        i += 1
    return i


class EndpointStats:
    """Cumulative counters for one cluster × subset × endpoint."""

    __slots__ = ("requests", "responses", "connect_errors", "retries", "timeouts", "hedges",
                 "ejections", "latency_counts", "latency_by_class", "latency_sums")

    def __init__(self) -> None:
        self.requests = 0
        self.responses = [0, 0, 0, 0, 0]
        self.connect_errors = 0
        self.retries = 0
        self.timeouts = 0  # tries past the per-try timeout that lost to a faster answer
        self.hedges = 0  # second tries sent here for a slow or hedged request
        self.ejections = 0  # times passive outlier detection took it out of rotation
        self.latency_counts = [0] * _NB
        # The same histogram split by status class, flat: class * _NB + bucket (the
        # exposition's http_server_request_duration_seconds by http_response_status_code).
        self.latency_by_class = [0] * (5 * _NB)
        self.latency_sums = [0.0, 0.0, 0.0, 0.0, 0.0]  # seconds, by status class

    def observe(self, status: int, latency_s: float) -> None:
        """Record one finished response (status and total latency)."""
        cls = status // 100 - 1
        i = bucket_index(latency_s * 1000.0)
        self.latency_counts[i] += 1
        if 0 <= cls < 5:
            self.responses[cls] += 1
            self.latency_by_class[cls * _NB + i] += 1
            self.latency_sums[cls] += latency_s


class Registry:
    """All endpoint stats of one process, keyed by (cluster, subset, endpoint id).

    Entries outlive table changes so that counters stay cumulative.
    """

    def __init__(self) -> None:
        self.stats: dict[tuple[str, str, str], EndpointStats] = {}

    def get(self, cluster: str, subset: str, endpoint: str) -> EndpointStats:
        key = (cluster, subset, endpoint)
        st = self.stats.get(key)
        if st is None:
            st = self.stats[key] = EndpointStats()
        return st

    def snapshot(self, inflight: dict[tuple[str, str, str], int]) -> dict[str, Any]:
        """Render the SNAPSHOT document; `inflight` comes from the live balancers."""
        clusters: dict[str, Any] = {}
        for (cluster, subset, ep), st in sorted(self.stats.items()):
            subsets = clusters.setdefault(cluster, {"subsets": {}})["subsets"]
            eps = subsets.setdefault(subset, {"endpoints": {}})["endpoints"]
            eps[ep] = {
                "requests": st.requests,
                "responses": dict(zip(_CLASSES, st.responses)),
                "connect_errors": st.connect_errors,
                "retries": st.retries,
                "timeouts": st.timeouts,
                "hedges": st.hedges,
                "ejections": st.ejections,
                "inflight": inflight.get((cluster, subset, ep), 0),
                "latency_buckets_ms": list(LATENCY_BUCKETS_MS),
                "latency_counts": list(st.latency_counts),
                "latency_by_class": {
                    c: st.latency_by_class[k * _NB:(k + 1) * _NB]
                    for k, c in enumerate(_CLASSES) if st.responses[k]},
                "latency_sum_by_class": {
                    c: st.latency_sums[k] for k, c in enumerate(_CLASSES) if st.responses[k]},
            }
        return {"clusters": clusters}


def _endpoints(snap: dict[str, Any]) -> Iterable[tuple[str, str, str, dict[str, Any]]]:
    for cname, c in snap.get("clusters", {}).items():
        for sname, s in c.get("subsets", {}).items():
            for ename, e in s.get("endpoints", {}).items():
                yield cname, sname, ename, e


def merge_snapshots(snaps: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum SNAPSHOTs of several worker processes into one."""
    out: dict[str, Any] = {"clusters": {}}
    for snap in snaps:
        for cname, sname, ename, e in _endpoints(snap):
            subsets = out["clusters"].setdefault(cname, {"subsets": {}})["subsets"]
            eps = subsets.setdefault(sname, {"endpoints": {}})["endpoints"]
            cur = eps.get(ename)
            if cur is None:
                eps[ename] = {
                    **e,
                    "responses": dict(e["responses"]),
                    "latency_counts": list(e["latency_counts"]),
                    "latency_by_class": {c: list(v) for c, v in
                                         e.get("latency_by_class", {}).items()},
                    "latency_sum_by_class": dict(e.get("latency_sum_by_class", {})),
                }
                continue
            for k in ("requests", "connect_errors", "retries", "timeouts", "hedges",
                      "ejections", "inflight"):
                cur[k] = cur.get(k, 0) + e.get(k, 0)
            for k, v in e["responses"].items():
                cur["responses"][k] += v
            cur["latency_counts"] = [a + b for a, b in zip(cur["latency_counts"], e["latency_counts"])]
            sums = cur.setdefault("latency_sum_by_class", {})
            for c, v in e.get("latency_sum_by_class", {}).items():
                sums[c] = sums.get(c, 0.0) + v
            by_class = cur.setdefault("latency_by_class", {})
            for c, v in e.get("latency_by_class", {}).items():
                have = by_class.get(c)
                by_class[c] = list(v) if have is None else [a + b for a, b in zip(have, v)]
    return out


def tag_snapshots(snaps: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """One SNAPSHOT of several proxies that serve side by side (e.g. gateway pods), each
    endpoint of source `s` kept as `<endpoint>@<s>`. Unlike `merge_snapshots`, counters
    stay per process, so a reader that diffs endpoint by endpoint sees one proxy's restart
    as that proxy's reset, not as the whole sum going backwards."""
    out: dict[str, Any] = {"clusters": {}}
    for source, snap in sorted(snaps.items()):
        for cname, sname, ename, e in _endpoints(snap):
            subsets = out["clusters"].setdefault(cname, {"subsets": {}})["subsets"]
            subsets.setdefault(sname, {"endpoints": {}})["endpoints"][f"{ename}@{source}"] = e
    return out
