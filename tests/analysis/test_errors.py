"""Tests for the sequential error-rate test (mso.analysis.errors)."""

from __future__ import annotations

import random

import pytest

from mso.analysis.errors import ErrorRateTest


def feed(test: ErrorRateTest, rng: random.Random, intervals: int, stable_n: int, canary_n: int,
         stable_rate: float, canary_rate: float) -> int | None:
    """Run intervals; return the canary request count at the first rejection."""
    for _ in range(intervals):
        ks = sum(rng.random() < stable_rate for _ in range(stable_n))
        kc = sum(rng.random() < canary_rate for _ in range(canary_n))
        if test.update(stable_n, ks, canary_n, kc).rejected:
            return test.requests["canary"]
    return None


def test_equal_error_rates_do_not_reject() -> None:
    test = ErrorRateTest(alpha=0.005, margin=0.0)
    assert feed(test, random.Random(1), 120, 180, 20, 0.02, 0.02) is None
    assert test.result().p_value > 0.005


def test_five_percent_canary_errors_reject_within_a_few_hundred_requests() -> None:
    test = ErrorRateTest(alpha=0.005, margin=0.01)
    at = feed(test, random.Random(2), 100, 180, 20, 0.001, 0.05)
    assert at is not None and at <= 300
    result = test.result()
    assert result.canary_rate > 0.03 and result.stable_rate < 0.005
    assert result.canary_rate - result.stable_rate > 0.01


def test_significant_increase_below_margin_does_not_reject() -> None:
    # 1.5% vs 1.0% on lots of traffic: clearly significant, but within a 1-point margin.
    strict = ErrorRateTest(alpha=0.005, margin=0.0)
    tolerant = ErrorRateTest(alpha=0.005, margin=0.01)
    rng_a, rng_b = random.Random(4), random.Random(4)
    assert feed(strict, rng_a, 200, 500, 500, 0.010, 0.015) is not None
    assert feed(tolerant, rng_b, 200, 500, 500, 0.010, 0.015) is None


def test_only_canary_worse_triggers_rejection() -> None:
    test = ErrorRateTest(alpha=0.005, margin=0.0)
    assert feed(test, random.Random(5), 100, 100, 100, 0.10, 0.0) is None


def test_changing_weights_use_each_intervals_share() -> None:
    # Canary share goes 5% -> 50%. Errors follow requests, so a pooled share
    # would wrongly see an excess of canary errors late; per-interval shares do not.
    test = ErrorRateTest(alpha=0.005, margin=0.0)
    rng = random.Random(6)
    assert feed(test, rng, 30, 190, 10, 0.05, 0.05) is None
    assert feed(test, rng, 30, 100, 100, 0.05, 0.05) is None
    assert test.result().p_value > 0.005


def test_rejection_is_sticky() -> None:
    test = ErrorRateTest(alpha=0.01, margin=0.0)
    test.update(100, 0, 100, 40)
    assert test.result().rejected
    assert test.update(10_000, 500, 100, 0).rejected


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        ErrorRateTest(alpha=0.0, margin=0.01)
    with pytest.raises(ValueError):
        ErrorRateTest(alpha=0.01, margin=-0.1)
