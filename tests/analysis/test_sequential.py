"""Tests for the anytime-valid primitives in mso.analysis.sequential."""

from __future__ import annotations

import math
import random

import pytest

from mso.analysis.sequential import (
    OddsMixtureEProcess,
    lower_bound,
    rate_certified_below,
    shifted_probability,
    upper_bound,
)


def test_shifted_probability_multiplies_odds() -> None:
    q = shifted_probability(0.2, 3.0)
    assert q / (1 - q) == pytest.approx(3.0 * 0.2 / 0.8)


def test_eprocess_grows_under_alternative_and_rejects() -> None:
    e = OddsMixtureEProcess()
    for _ in range(10):
        e.update(successes=5, trials=6, p0=0.1)
    assert e.rejects(0.01)
    assert e.p_value < 0.01


def test_eprocess_never_rejects_on_null_batches_in_expectation() -> None:
    rng = random.Random(7)
    rejections = 0
    for _ in range(300):
        e = OddsMixtureEProcess()
        for _ in range(100):
            p0 = rng.choice([0.05, 0.1, 0.5])  # null probability changes between batches
            trials = rng.randint(0, 5)
            e.update(sum(rng.random() < p0 for _ in range(trials)), trials, p0)
        rejections += e.rejects(0.05)
    # Ville: at most 5% in expectation; 300 runs -> allow binomial slack.
    assert rejections <= 25


def test_eprocess_p_value_uses_running_maximum() -> None:
    e = OddsMixtureEProcess()
    e.update(3, 3, 0.1)
    best = e.p_value
    e.update(0, 50, 0.1)  # evidence against the alternative shrinks E, not the max
    assert e.e_value < 1 / best
    assert e.p_value == pytest.approx(best)


def test_eprocess_rejects_invalid_counts_and_grid() -> None:
    with pytest.raises(ValueError):
        OddsMixtureEProcess(thetas=(0.5, 2.0))
    with pytest.raises(ValueError):
        OddsMixtureEProcess().update(4, 3, 0.5)


def test_confidence_bounds_bracket_the_estimate_and_tighten() -> None:
    lo_small, hi_small = lower_bound(10, 100, 0.01), upper_bound(10, 100, 0.01)
    lo_big, hi_big = lower_bound(1000, 10000, 0.01), upper_bound(1000, 10000, 0.01)
    assert lo_small < 0.1 < hi_small
    assert lo_big < 0.1 < hi_big
    assert hi_big - lo_big < hi_small - lo_small
    assert upper_bound(0, 0, 0.01) == 1.0 and lower_bound(0, 0, 0.01) == 0.0


def test_confidence_sequence_covers_uniformly_over_time() -> None:
    rng = random.Random(3)
    misses = 0
    for _ in range(200):
        k = 0
        for n in range(1, 401):
            k += rng.random() < 0.02
            if n % 20 == 0 and not lower_bound(k, n, 0.05) <= 0.02 <= upper_bound(k, n, 0.05):
                misses += 1
                break
    assert misses <= 20  # <= 5% of 200 plus slack


def test_rate_certified_below_matches_upper_bound() -> None:
    for k, n in [(0, 500), (2, 1000), (10, 1000), (30, 1000)]:
        ub = upper_bound(k, n, 0.01)
        assert rate_certified_below(k, n, 0.02, 0.01) == (ub <= 0.02 + 1e-9)
    assert not math.isnan(upper_bound(5, 5, 0.01))
