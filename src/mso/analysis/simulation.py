"""Seeded traffic simulator for canary analyses, plus the naive repeated test it is compared with.

Used by the statistical tests and by ``bench/rollouts/false_rollbacks.py`` to
measure false rollbacks of healthy canaries and detection times of bad ones
under continuous monitoring. Requests are split between subsets by weight, fail
independently at the subset's error rate, and take a log-normal latency (plus
an optional slow tail) that is binned into the proxy's histogram buckets.

``NaiveRepeatedTest`` is what the judge must *not* be: a fixed-sample one-sided
two-proportion z-test (errors) and a one-sample z-test on p99 exceedances,
simply re-run on the cumulative data after every poll. Each look is a level
``alpha`` test, so the chance that *some* look fires grows with the number of
looks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

from mso.analysis.judge import AnalysisConfig, CanaryJudge
from mso.analysis.latency import exceedances, threshold_index
from mso.analysis.windows import SubsetWindow

BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000,
)


@dataclass(frozen=True)
class SubsetProfile:
    """How one subset behaves: error rate and latency distribution."""

    error_rate: float = 0.01
    median_ms: float = 20.0
    sigma: float = 0.5
    slow_fraction: float = 0.0
    slow_extra_ms: float = 0.0

    def bucket_cdf(self, bounds: tuple[float, ...]) -> list[float]:
        """Cumulative probability at each bound (the +Inf bucket takes the rest)."""

        def lognormal_cdf(x: float) -> float:
            if x <= 0.0:
                return 0.0
            z = (math.log(x) - math.log(self.median_ms)) / self.sigma
            return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))

        fast = 1.0 - self.slow_fraction
        return [
            fast * lognormal_cdf(b) + self.slow_fraction * lognormal_cdf(b - self.slow_extra_ms)
            for b in bounds
        ]


def simulate_window(
    rng: random.Random, requests: int, profile: SubsetProfile, bounds: tuple[float, ...] = BUCKETS_MS
) -> SubsetWindow:
    """One poll's increments for a subset that received ``requests`` requests."""
    errors = sum(1 for _ in range(requests) if rng.random() < profile.error_rate)
    cum = profile.bucket_cdf(bounds) + [1.0]
    picks = rng.choices(range(len(cum)), cum_weights=cum, k=requests)
    counts = [0] * len(cum)
    for i in picks:
        counts[i] += 1
    return SubsetWindow(requests, errors, bounds, tuple(counts))


@dataclass(frozen=True)
class Scenario:
    """Traffic of one simulated analysis."""

    stable: SubsetProfile
    canary: SubsetProfile
    rps: int = 200
    canary_weight: float | Callable[[int], float] = 0.10
    intervals: int = 60

    def weight_at(self, interval: int) -> float:
        w = self.canary_weight
        return w(interval) if callable(w) else w


def simulate_windows(
    rng: random.Random, scenario: Scenario
) -> list[tuple[SubsetWindow, SubsetWindow]]:
    """Per-interval (stable, canary) windows for a whole analysis."""
    out = []
    for t in range(scenario.intervals):
        canary_n = sum(1 for _ in range(scenario.rps) if rng.random() < scenario.weight_at(t))
        out.append(
            (
                simulate_window(rng, scenario.rps - canary_n, scenario.stable),
                simulate_window(rng, canary_n, scenario.canary),
            )
        )
    return out


class NaiveRepeatedTest:
    """Fixed-sample z-tests on cumulative data, re-run at every poll (anti-pattern)."""

    def __init__(self, config: AnalysisConfig) -> None:
        self.config = config
        alpha = config.alpha
        self._z_errors = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        self._z_latency = NormalDist().inv_cdf(1.0 - alpha / 2.0)
        self._n = {"stable": 0, "canary": 0}
        self._e = {"stable": 0, "canary": 0}
        self._hist: dict[str, list[int]] = {}
        self.failed = False

    def observe(self, stable: SubsetWindow, canary: SubsetWindow) -> bool:
        for name, w in (("stable", stable), ("canary", canary)):
            self._n[name] += w.requests
            self._e[name] += w.errors
            if w.latency_counts:
                hist = self._hist.setdefault(name, [0] * len(w.latency_counts))
                self._hist[name] = [a + b for a, b in zip(hist, w.latency_counts, strict=True)]
        if min(self._n.values()) >= self.config.min_samples:
            self.failed = self.failed or self._errors_reject() or self._latency_rejects(stable)
        return self.failed

    def _errors_reject(self) -> bool:
        n_c, n_s = self._n["canary"], self._n["stable"]
        p_c, p_s = self._e["canary"] / n_c, self._e["stable"] / n_s
        pooled = (self._e["canary"] + self._e["stable"]) / (n_c + n_s)
        se = math.sqrt(max(pooled * (1.0 - pooled), 1e-12) * (1.0 / n_c + 1.0 / n_s))
        return (p_c - p_s - self.config.max_error_rate_increase) / se > self._z_errors

    def _latency_rejects(self, window: SubsetWindow) -> bool:
        stable, canary = self._hist.get("stable"), self._hist.get("canary")
        bounds = window.latency_buckets_ms
        if not stable or not canary or not bounds:
            return False
        # Plug-in stable p99 bucket: the first bound with <= 1% of stable above it.
        total = sum(stable)
        base = next((j for j in range(len(bounds)) if exceedances(stable, j) <= 0.01 * total), None)
        if base is None:
            return False
        t = threshold_index(bounds, base, self.config.max_latency_p99_increase)
        n = sum(canary)
        if t is None or n == 0:
            return False
        share = exceedances(canary, t) / n
        return (share - 0.01) / math.sqrt(0.01 * 0.99 / n) > self._z_latency


@dataclass(frozen=True)
class RunOutcome:
    """What happened in one simulated analysis."""

    judge_failed_at: int | None
    naive_failed_at: int | None
    canary_requests_at_judge_fail: int | None
    final_verdict: str


def run_analysis(rng: random.Random, scenario: Scenario, config: AnalysisConfig) -> RunOutcome:
    """Feed one simulated analysis to the judge and the naive test on the same data."""
    judge, naive = CanaryJudge(config), NaiveRepeatedTest(config)
    judge_at: int | None = None
    naive_at: int | None = None
    canary_requests: int | None = None
    verdict = "inconclusive"
    windows = simulate_windows(rng, scenario)
    for t, (stable, canary) in enumerate(windows):
        result = judge.observe(stable, canary, final=t == len(windows) - 1)
        verdict = result.verdict
        if verdict == "fail" and judge_at is None:
            judge_at, canary_requests = t + 1, result.canary.requests
        if naive.observe(stable, canary) and naive_at is None:
            naive_at = t + 1
    return RunOutcome(judge_at, naive_at, canary_requests, verdict)
