"""Anytime-valid latency test on the proxy's histograms: is the canary's p99 (or p50) worse?

The proxy reports latency as bucket counts (upper bounds ``latency_buckets_ms``
plus a +Inf bucket), so the test is built on exceedance counts at bucket bounds,
which are exact, rather than on interpolated quantiles, which are not.

For a quantile level ``q`` (0.99 or 0.50) and a tolerated relative increase
``m`` (``max_latency_p99_increase``):

1. **Threshold from stable, conservatively.** With ``X_j`` the number of stable
   requests slower than bound ``b_j`` out of ``N``, the stable quantile is
   certified to be ``<= b_j`` once the time-uniform upper confidence bound on
   ``P_s(L > b_j)`` (Robbins' beta-binomial confidence sequence at
   ``alpha/2``) is ``<= 1 - q``. Take the smallest such ``b_j``, multiply by
   ``1 + m`` and round *up* to the next bucket bound ``T``. Because exceedance
   is monotone in ``j``, the certificate can only be wrong if the confidence
   sequence misses at the one fixed bucket just below the true quantile, so
   with probability ``>= 1 - alpha/2``, at all times at once,
   ``T >= (1 + m) * true stable quantile`` (the argument of Howard & Ramdas,
   "Sequential estimation of quantiles with applications to A/B-testing and
   best-arm identification", Bernoulli 2022). Until enough stable traffic has
   arrived to certify any finite bound, the canary is not tested (no bet).
2. **Sequential exceedance test on the canary.** Under H0 (canary quantile
   ``<= (1 + m) *`` stable quantile) and on the event of step 1, every canary
   request exceeds ``T`` with probability ``<= 1 - q``. Each interval's canary
   exceedance count is fed to a one-sided odds mixture e-process
   (:class:`~mso.analysis.sequential.OddsMixtureEProcess`) with null ``1 - q``;
   the threshold may move between intervals because it only depends on stable
   data, which is independent of the canary's requests. Rejecting at
   ``1/(alpha/2)`` therefore gives a false-rollback probability
   ``<= alpha/2 + alpha/2 = alpha`` at any stopping time.

Costs of the conservative threshold: bucket rounding and the confidence bound
on stable push ``T`` up, so a regression has to clear a coarser bar than the
nominal ``(1 + m)`` — power is lost, never validity. The guarantee assumes
requests within a subset are exchangeable (no strong autocorrelation in
latency) and that stable's latency distribution is stationary over the analysis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mso.analysis.sequential import OddsMixtureEProcess, rate_certified_below


def histogram_quantile(bounds: Sequence[float], counts: Sequence[int], q: float) -> float | None:
    """Point estimate of a quantile, interpolating linearly inside its bucket.

    Mirrors Prometheus' ``histogram_quantile``: the first bucket starts at 0 and
    a quantile that falls in the +Inf bucket is reported as the last finite bound.
    """
    total = sum(counts)
    if total == 0 or not bounds:
        return None
    rank = q * total
    cumulative = 0
    for i, count in enumerate(counts):
        if count and cumulative + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = float(bounds[i - 1]) if i > 0 else 0.0
            return lower + (float(bounds[i]) - lower) * (rank - cumulative) / count
        cumulative += count
    return float(bounds[-1])


def exceedances(counts: Sequence[int], bound_index: int) -> int:
    """Requests slower than bound ``bound_index`` (buckets are ``(b_{i-1}, b_i]``)."""
    return sum(counts[bound_index + 1 :])


def certified_quantile_bound(
    bounds: Sequence[float], counts: Sequence[int], q: float, alpha: float
) -> int | None:
    """Index of the smallest bound certified to be >= the q-quantile, or None."""
    total = sum(counts)
    above = total
    for j in range(len(bounds)):
        above -= counts[j]
        if rate_certified_below(above, total, 1.0 - q, alpha):
            return j
    return None


def threshold_index(bounds: Sequence[float], base_index: int, margin: float) -> int | None:
    """Smallest bound >= ``(1 + margin) * bounds[base_index]``, or None if off the scale."""
    target = float(bounds[base_index]) * (1.0 + margin)
    for j in range(base_index, len(bounds)):
        if float(bounds[j]) >= target * (1.0 - 1e-12):
            return j
    return None


@dataclass(frozen=True)
class LatencyTestResult:
    """Snapshot of one quantile's latency test after the latest interval."""

    quantile: float
    rejected: bool
    e_value: float
    p_value: float
    threshold_ms: float | None
    canary_exceedances: int
    canary_tested: int


class LatencyTest:
    """Sequential state of one quantile comparison across poll intervals."""

    def __init__(self, quantile: float, alpha: float, margin: float) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.quantile = quantile
        self.alpha = alpha
        self.margin = margin
        self._bounds: tuple[float, ...] = ()
        self._stable: list[int] = []
        self._eprocess = OddsMixtureEProcess()
        self._threshold: int | None = None
        self._exceeded = 0
        self._tested = 0

    def update(
        self, bounds: Sequence[float], stable_counts: Sequence[int], canary_counts: Sequence[int]
    ) -> LatencyTestResult:
        """Fold in one interval's histogram increments and return the test's state."""
        if bounds:
            self._accumulate_stable(tuple(float(b) for b in bounds), stable_counts)
            base = certified_quantile_bound(
                self._bounds, self._stable, self.quantile, self.alpha / 2.0
            )
            self._threshold = None if base is None else threshold_index(
                self._bounds, base, self.margin
            )
            self._test_canary(canary_counts)
        return self.result()

    def _accumulate_stable(self, bounds: tuple[float, ...], counts: Sequence[int]) -> None:
        if not self._bounds:
            self._bounds = bounds
            self._stable = [0] * (len(bounds) + 1)
        if bounds != self._bounds:
            raise ValueError(f"latency bucket bounds changed: {self._bounds} -> {bounds}")
        if counts:
            _check_length(self._bounds, counts)
            self._stable = [a + b for a, b in zip(self._stable, counts, strict=True)]

    def _test_canary(self, counts: Sequence[int]) -> None:
        if not counts or self._threshold is None:
            return  # no certified threshold yet: this interval places no bet
        _check_length(self._bounds, counts)
        exceeded, tested = exceedances(counts, self._threshold), sum(counts)
        self._eprocess.update(exceeded, tested, 1.0 - self.quantile)
        self._exceeded += exceeded
        self._tested += tested

    def result(self) -> LatencyTestResult:
        return LatencyTestResult(
            quantile=self.quantile,
            rejected=self._eprocess.rejects(self.alpha / 2.0),
            e_value=self._eprocess.e_value,
            p_value=min(1.0, self._eprocess.p_value),
            threshold_ms=None if self._threshold is None else self._bounds[self._threshold],
            canary_exceedances=self._exceeded,
            canary_tested=self._tested,
        )


def _check_length(bounds: Sequence[float], counts: Sequence[int]) -> None:
    if len(counts) != len(bounds) + 1:
        raise ValueError(
            f"latency_counts has {len(counts)} entries, expected {len(bounds) + 1} (bounds + Inf)"
        )
