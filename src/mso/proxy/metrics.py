"""In-process traffic counters and their two renderings (SNAPSHOT and Prometheus).

The hot path only bumps plain ints in an `EndpointStats`; the SNAPSHOT dict of
the control protocol and the Prometheus text exposition are rendered on demand.
"""
from __future__ import annotations

from typing import Any, Final, Iterable

# Log-spaced upper bounds in milliseconds; the last count is the +Inf bucket.
LATENCY_BUCKETS_MS: Final[tuple[float, ...]] = (
    0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000,
)
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


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
                 "ejections", "latency_counts")

    def __init__(self) -> None:
        self.requests = 0
        self.responses = [0, 0, 0, 0, 0]
        self.connect_errors = 0
        self.retries = 0
        self.timeouts = 0  # tries past the per-try timeout that lost to a faster answer
        self.hedges = 0  # second tries sent here for a slow or hedged request
        self.ejections = 0  # times passive outlier detection took it out of rotation
        self.latency_counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)

    def observe(self, status: int, latency_s: float) -> None:
        """Record one finished response (status and total latency)."""
        cls = status // 100 - 1
        if 0 <= cls < 5:
            self.responses[cls] += 1
        self.latency_counts[bucket_index(latency_s * 1000.0)] += 1


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
                }
                continue
            for k in ("requests", "connect_errors", "retries", "timeouts", "hedges",
                      "ejections", "inflight"):
                cur[k] = cur.get(k, 0) + e.get(k, 0)
            for k, v in e["responses"].items():
                cur["responses"][k] += v
            cur["latency_counts"] = [a + b for a, b in zip(cur["latency_counts"], e["latency_counts"])]
    return out


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(snap: dict[str, Any]) -> str:
    """Render a SNAPSHOT in the Prometheus text exposition format (version 0.0.4)."""
    lines = [
        "# HELP mso_proxy_requests_total Requests sent to an upstream endpoint.",
        "# TYPE mso_proxy_requests_total counter",
    ]
    rows = list(_endpoints(snap))
    lbl = {
        (c, s, e): f'cluster="{_esc(c)}",subset="{_esc(s)}",endpoint="{_esc(e)}"'
        for c, s, e, _ in rows
    }
    for c, s, e, d in rows:
        lines.append(f"mso_proxy_requests_total{{{lbl[c, s, e]}}} {d['requests']}")
    lines += ["# HELP mso_proxy_responses_total Responses by status class.",
              "# TYPE mso_proxy_responses_total counter"]
    for c, s, e, d in rows:
        for cls, n in d["responses"].items():
            lines.append(f'mso_proxy_responses_total{{{lbl[c, s, e]},code="{cls}"}} {n}')
    for metric, key, typ in (
        ("mso_proxy_connect_errors_total", "connect_errors", "counter"),
        ("mso_proxy_retries_total", "retries", "counter"),
        ("mso_proxy_try_timeouts_total", "timeouts", "counter"),
        ("mso_proxy_hedges_total", "hedges", "counter"),
        ("mso_proxy_ejections_total", "ejections", "counter"),
        ("mso_proxy_inflight", "inflight", "gauge"),
    ):
        lines += [f"# HELP {metric} {key.replace('_', ' ')}.", f"# TYPE {metric} {typ}"]
        lines += [f"{metric}{{{lbl[c, s, e]}}} {d[key]}" for c, s, e, d in rows]
    lines += ["# HELP mso_proxy_latency_seconds Request latency.",
              "# TYPE mso_proxy_latency_seconds histogram"]
    for c, s, e, d in rows:
        cum = 0
        for bound, n in zip(d["latency_buckets_ms"], d["latency_counts"]):
            cum += n
            lines.append(
                f'mso_proxy_latency_seconds_bucket{{{lbl[c, s, e]},le="{bound / 1000:g}"}} {cum}'
            )
        cum += d["latency_counts"][-1]
        lines.append(f'mso_proxy_latency_seconds_bucket{{{lbl[c, s, e]},le="+Inf"}} {cum}')
        lines.append(f"mso_proxy_latency_seconds_count{{{lbl[c, s, e]}}} {cum}")
    return "\n".join(lines) + "\n"
