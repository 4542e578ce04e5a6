"""Tests for the histogram latency test (mso.analysis.latency)."""

from __future__ import annotations

import random

import pytest

from mso.analysis.latency import (
    LatencyTest,
    certified_quantile_bound,
    exceedances,
    histogram_quantile,
    threshold_index,
)
from mso.analysis.simulation import BUCKETS_MS, SubsetProfile, simulate_window

BOUNDS = (10.0, 20.0, 50.0, 100.0)


def test_histogram_quantile_interpolates_within_bucket() -> None:
    assert histogram_quantile(BOUNDS, [0, 10, 0, 0, 0], 0.5) == pytest.approx(15.0)
    assert histogram_quantile(BOUNDS, [0, 0, 0, 0, 5], 0.99) == 100.0
    assert histogram_quantile(BOUNDS, [0, 0, 0, 0, 0], 0.5) is None


def test_exceedances_count_buckets_above_a_bound() -> None:
    assert exceedances([1, 2, 3, 4, 5], 1) == 12


def test_certified_bound_is_conservative_and_needs_data() -> None:
    few = [5, 5, 0, 0, 0]
    assert certified_quantile_bound(BOUNDS, few, 0.99, 0.01) is None
    many = [5000, 4990, 10, 0, 0]  # 0.1% above 20 ms
    j = certified_quantile_bound(BOUNDS, many, 0.99, 0.01)
    assert j is not None and BOUNDS[j] >= 20.0


def test_threshold_rounds_up_to_a_bucket_bound() -> None:
    assert threshold_index(BOUNDS, 1, 0.25) == 2  # 20 * 1.25 = 25 -> 50
    assert threshold_index(BOUNDS, 3, 0.25) is None  # beyond the last finite bound


def run(canary: SubsetProfile, quantile: float, seed: int, intervals: int = 60) -> int | None:
    rng = random.Random(seed)
    test = LatencyTest(quantile, alpha=0.0025, margin=0.25)
    stable = SubsetProfile()
    for t in range(intervals):
        s, c = simulate_window(rng, 180, stable), simulate_window(rng, 20, canary)
        if test.update(BUCKETS_MS, s.latency_counts, c.latency_counts).rejected:
            return t + 1
    return None


def test_same_latency_distribution_does_not_reject() -> None:
    assert all(run(SubsetProfile(), 0.99, seed) is None for seed in range(5))
    assert all(run(SubsetProfile(), 0.50, seed) is None for seed in range(5))


def test_p99_plus_200ms_rejects() -> None:
    slow_tail = SubsetProfile(slow_fraction=0.05, slow_extra_ms=200.0)
    assert run(slow_tail, 0.99, seed=1) is not None
    assert run(slow_tail, 0.50, seed=1) is None  # the median is unaffected


def test_p50_shift_rejects() -> None:
    assert run(SubsetProfile(median_ms=80.0), 0.50, seed=2) is not None


def test_no_bet_before_threshold_is_certified() -> None:
    test = LatencyTest(0.99, alpha=0.0025, margin=0.25)
    result = test.update(BOUNDS, [1, 0, 0, 0, 0], [0, 0, 0, 0, 10])
    assert result.threshold_ms is None and result.canary_tested == 0 and not result.rejected


def test_changed_bucket_bounds_are_refused() -> None:
    test = LatencyTest(0.99, alpha=0.01, margin=0.25)
    test.update(BOUNDS, [1, 0, 0, 0, 0], [])
    with pytest.raises(ValueError):
        test.update((1.0, 2.0, 3.0, 4.0), [1, 0, 0, 0, 0], [])
