"""Per-subset metric increments (``SubsetWindow``) and diffing of proxy SNAPSHOTs into them.

The proxy's ``metrics`` op returns cumulative counters per endpoint (see
SNAPSHOT in docs/architecture.md). The judge works on increments between two
polls, summed over a subset's endpoints. Endpoints come and go during a rollout
and the proxy may restart, so diffing is done per endpoint: an endpoint that is
new, or whose counters went backwards (proxy restarted), contributes its current
counters in full; an endpoint that vanished contributes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SnapshotError", "SubsetWindow", "window_from_snapshots"]


class SnapshotError(ValueError):
    """A SNAPSHOT is malformed or inconsistent (e.g. differing bucket bounds)."""


@dataclass(frozen=True)
class SubsetWindow:
    """Increments for one subset since the previous poll.

    ``errors`` counts 5xx responses plus connect errors. ``latency_counts`` has
    one entry per bound in ``latency_buckets_ms`` plus the +Inf bucket; both are
    empty when the subset saw no traffic.
    """

    requests: int
    errors: int
    latency_buckets_ms: tuple[float, ...] = ()
    latency_counts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.requests < 0 or self.errors < 0 or any(c < 0 for c in self.latency_counts):
            raise ValueError(f"negative increment in {self!r}")
        if self.latency_counts and len(self.latency_counts) != len(self.latency_buckets_ms) + 1:
            raise ValueError("latency_counts must have len(latency_buckets_ms) + 1 entries")


@dataclass(frozen=True)
class _Counters:
    requests: int
    errors: int
    bounds: tuple[float, ...]
    counts: tuple[int, ...]


def _endpoint_counters(raw: Mapping[str, Any]) -> _Counters:
    try:
        responses = raw.get("responses", {})
        return _Counters(
            requests=int(raw.get("requests", 0)),
            errors=int(responses.get("5xx", 0)) + int(raw.get("connect_errors", 0)),
            bounds=tuple(float(b) for b in raw.get("latency_buckets_ms", ())),
            counts=tuple(int(c) for c in raw.get("latency_counts", ())),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"malformed endpoint counters: {exc}") from exc


def _endpoints(snapshot: Mapping[str, Any] | None, cluster: str, subset: str) -> dict[str, Any]:
    if not snapshot:
        return {}
    try:
        subsets = snapshot.get("clusters", {}).get(cluster, {}).get("subsets", {})
        endpoints = subsets.get(subset, {}).get("endpoints", {})
    except AttributeError as exc:
        raise SnapshotError(f"malformed snapshot for {cluster}/{subset}: {exc}") from exc
    if not isinstance(endpoints, dict):
        raise SnapshotError(f"endpoints of {cluster}/{subset} is not an object")
    return endpoints


def _increment(prev: _Counters | None, cur: _Counters) -> _Counters:
    went_backwards = prev is not None and (
        cur.requests < prev.requests
        or cur.errors < prev.errors
        or cur.bounds != prev.bounds
        or any(c < p for c, p in zip(cur.counts, prev.counts))
    )
    if prev is None or went_backwards:
        return cur
    return _Counters(
        requests=cur.requests - prev.requests,
        errors=cur.errors - prev.errors,
        bounds=cur.bounds,
        counts=tuple(c - p for c, p in zip(cur.counts, prev.counts, strict=True)),
    )


def window_from_snapshots(
    prev: Mapping[str, Any] | None, cur: Mapping[str, Any], cluster: str, subset: str
) -> SubsetWindow:
    """Increments of ``cluster``/``subset`` between two SNAPSHOTs, summed over endpoints.

    ``prev=None`` diffs against zero (everything since the proxy started).
    """
    before = _endpoints(prev, cluster, subset)
    requests = errors = 0
    bounds: tuple[float, ...] = ()
    counts: list[int] = []
    for endpoint_id, raw in _endpoints(cur, cluster, subset).items():
        cur_counters = _endpoint_counters(raw)
        prev_raw = before.get(endpoint_id)
        delta = _increment(None if prev_raw is None else _endpoint_counters(prev_raw), cur_counters)
        requests += delta.requests
        errors += delta.errors
        if not delta.counts:
            continue
        if len(delta.counts) != len(delta.bounds) + 1:
            raise SnapshotError(f"endpoint {endpoint_id}: latency_counts/buckets length mismatch")
        if not counts:
            bounds, counts = delta.bounds, list(delta.counts)
        elif delta.bounds != bounds:
            raise SnapshotError(f"endpoint {endpoint_id}: latency bucket bounds differ")
        else:
            counts = [a + b for a, b in zip(counts, delta.counts, strict=True)]
    return SubsetWindow(requests, errors, bounds, tuple(counts))
