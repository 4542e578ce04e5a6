"""Tests for SubsetWindow and SNAPSHOT diffing (mso.analysis.windows)."""

from __future__ import annotations

from typing import Any

import pytest

from mso.analysis.judge import window_from_snapshots
from mso.analysis.windows import SnapshotError, SubsetWindow

BOUNDS = [10, 100]


def endpoint(requests: int, r5xx: int, connect: int, counts: list[int]) -> dict[str, Any]:
    return {
        "requests": requests,
        "responses": {"1xx": 0, "2xx": requests - r5xx, "3xx": 0, "4xx": 0, "5xx": r5xx},
        "connect_errors": connect, "retries": 0, "inflight": 0,
        "latency_buckets_ms": BOUNDS, "latency_counts": counts,
    }


def snapshot(subsets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"clusters": {"orders/http": {"subsets": {
        name: {"endpoints": eps} for name, eps in subsets.items()}}}}


def test_diff_sums_endpoints_and_counts_5xx_plus_connect_errors() -> None:
    prev = snapshot({"stable": {"a": endpoint(10, 1, 0, [5, 5, 0]), "b": endpoint(4, 0, 0, [4, 0, 0])}})
    cur = snapshot({"stable": {"a": endpoint(30, 2, 1, [15, 10, 5]), "b": endpoint(10, 1, 0, [8, 2, 0])}})
    w = window_from_snapshots(prev, cur, "orders/http", "stable")
    assert w == SubsetWindow(26, 3, (10.0, 100.0), (14, 7, 5))


def test_new_endpoint_counts_in_full_and_vanished_endpoint_is_ignored() -> None:
    prev = snapshot({"canary": {"old": endpoint(50, 5, 0, [50, 0, 0])}})
    cur = snapshot({"canary": {"new": endpoint(7, 1, 0, [6, 1, 0])}})
    w = window_from_snapshots(prev, cur, "orders/http", "canary")
    assert (w.requests, w.errors, w.latency_counts) == (7, 1, (6, 1, 0))


def test_counter_reset_after_proxy_restart_uses_current_counters() -> None:
    prev = snapshot({"stable": {"a": endpoint(100, 3, 0, [90, 10, 0])}})
    cur = snapshot({"stable": {"a": endpoint(5, 0, 0, [5, 0, 0])}})
    w = window_from_snapshots(prev, cur, "orders/http", "stable")
    assert (w.requests, w.errors) == (5, 0)


def test_missing_cluster_or_subset_is_an_empty_window() -> None:
    cur = snapshot({"stable": {"a": endpoint(5, 0, 0, [5, 0, 0])}})
    assert window_from_snapshots(None, cur, "orders/http", "canary") == SubsetWindow(0, 0)
    assert window_from_snapshots(None, cur, "other", "stable") == SubsetWindow(0, 0)


def test_mismatched_bucket_bounds_are_reported() -> None:
    a = endpoint(5, 0, 0, [5, 0, 0])
    b = endpoint(5, 0, 0, [5, 0, 0, 0])
    b["latency_buckets_ms"] = [1, 10, 100]
    with pytest.raises(SnapshotError):
        window_from_snapshots(None, snapshot({"stable": {"a": a, "b": b}}), "orders/http", "stable")


def test_malformed_snapshot_raises_snapshot_error() -> None:
    with pytest.raises(SnapshotError):
        window_from_snapshots(None, {"clusters": {"orders/http": "nope"}}, "orders/http", "stable")


def test_window_validates_itself() -> None:
    with pytest.raises(ValueError):
        SubsetWindow(-1, 0)
    with pytest.raises(ValueError):
        SubsetWindow(3, 0, (10.0,), (1, 1, 1))
