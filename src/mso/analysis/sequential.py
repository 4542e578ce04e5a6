"""Anytime-valid building blocks: odds-ratio mixture e-processes and Bernoulli confidence sequences.

Everything in :mod:`mso.analysis` that makes a decision does so through the two
primitives defined here, because both stay valid when the data are inspected
after every sample (continuous monitoring) — unlike a fixed-sample test that is
simply repeated, whose false-alarm rate grows with every look.

``OddsMixtureEProcess``
    A nonnegative (super)martingale under H0 for a stream of binomial batches
    ``(x_t successes out of m_t trials)`` whose null success probability is at
    most ``p0_t`` (``p0_t`` may change from batch to batch, as long as it is
    fixed before the batch is seen). The alternative multiplies the odds by
    ``theta > 1``; ``theta`` is unknown, so the likelihood ratios of a fixed
    geometric grid of ``theta`` values are averaged with fixed prior weights
    (a discrete mixture, cf. Lindon, Sanden & Shirikian, KDD 2022, and Lindon &
    Malek, NeurIPS 2022, who use a conjugate Dirichlet mixture instead). Each
    component is a product of per-batch likelihood ratios with expectation
    ``<= 1`` under any null probability ``<= p0_t`` (the ratio is increasing in
    the success probability because ``theta > 1``), so the mixture is a
    supermartingale and Ville's inequality gives
    ``P_H0(sup_t E_t >= 1/alpha) <= alpha``. Only ``theta > 1`` components are
    used, which makes the test one-sided.

``bernoulli_cs_log_evalue`` / ``upper_bound`` / ``lower_bound``
    Robbins' beta-binomial mixture martingale for a Bernoulli rate ``r``
    (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
    nonparametric, nonasymptotic confidence sequences", AoS 2021):
    ``M_n(r) = B(a+k, b+n-k) / B(a, b) / (r^k (1-r)^(n-k))``. The set
    ``{r : M_n(r) < 1/alpha}`` is an interval that contains the true rate at
    all ``n`` simultaneously with probability ``>= 1 - alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Odds multipliers of the alternative mixture; geometric so that both small
#: (x1.25) and catastrophic (x1000) regressions have a component close to them.
DEFAULT_THETA_GRID: tuple[float, ...] = (
    1.25, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 50.0, 100.0, 300.0, 1000.0,
)

_BISECT_STEPS = 60


def shifted_probability(p0: float, theta: float) -> float:
    """Success probability whose odds are ``theta`` times the odds of ``p0``."""
    return p0 * theta / (p0 * theta + (1.0 - p0))


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return -math.inf
    return top + math.log(sum(math.exp(v - top) for v in values))


class OddsMixtureEProcess:
    """One-sided mixture e-process against ``H0: P(success) <= p0`` per batch."""

    def __init__(self, thetas: Sequence[float] = DEFAULT_THETA_GRID) -> None:
        if not thetas or min(thetas) <= 1.0:
            raise ValueError("theta grid must be non-empty with every theta > 1")
        self._thetas = tuple(thetas)
        self._log_prior = -math.log(len(self._thetas))
        self._log_lr = [0.0] * len(self._thetas)
        self._max_log_e = 0.0

    def update(self, successes: int, trials: int, p0: float) -> None:
        """Fold in one batch. ``p0`` must be chosen before the batch is seen."""
        if trials <= 0 or not 0.0 < p0 < 1.0:
            return  # nothing observed, or a degenerate null: the batch cannot bet
        if not 0 <= successes <= trials:
            raise ValueError(f"successes {successes} outside [0, {trials}]")
        failures = trials - successes
        for i, theta in enumerate(self._thetas):
            q = shifted_probability(p0, theta)
            self._log_lr[i] += successes * math.log(q / p0) + failures * math.log(
                (1.0 - q) / (1.0 - p0)
            )
        self._max_log_e = max(self._max_log_e, self.log_e_value)

    @property
    def log_e_value(self) -> float:
        return self._log_prior + _logsumexp(self._log_lr)

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e_value, 700.0))

    @property
    def p_value(self) -> float:
        """Anytime-valid p-value: ``min(1, 1 / max_s E_s)``."""
        return math.exp(-self._max_log_e)

    def rejects(self, alpha: float) -> bool:
        """True once the running maximum has reached ``1/alpha`` (Ville)."""
        return self._max_log_e >= math.log(1.0 / alpha)


def bernoulli_cs_log_evalue(
    k: int, n: int, r: float, a: float = 0.5, b: float = 0.5
) -> float:
    """``log M_n(r)`` of the beta-binomial mixture for ``k`` successes in ``n``."""
    if n == 0:
        return 0.0
    if r <= 0.0:
        return math.inf if k > 0 else _log_beta(a, b + n) - _log_beta(a, b)
    if r >= 1.0:
        return math.inf if k < n else _log_beta(a + n, b) - _log_beta(a, b)
    log_marginal = _log_beta(a + k, b + n - k) - _log_beta(a, b)
    return log_marginal - k * math.log(r) - (n - k) * math.log1p(-r)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def upper_bound(k: int, n: int, alpha: float) -> float:
    """Time-uniform upper confidence bound on a Bernoulli rate."""
    if n == 0:
        return 1.0
    threshold = math.log(1.0 / alpha)
    lo, hi = k / n, 1.0
    if bernoulli_cs_log_evalue(k, n, hi) < threshold:
        return 1.0
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2.0
        if bernoulli_cs_log_evalue(k, n, mid) >= threshold:
            hi = mid
        else:
            lo = mid
    return hi


def lower_bound(k: int, n: int, alpha: float) -> float:
    """Time-uniform lower confidence bound on a Bernoulli rate."""
    if n == 0:
        return 0.0
    return 1.0 - upper_bound(n - k, n, alpha)


def rate_certified_below(k: int, n: int, r: float, alpha: float) -> bool:
    """True when the time-uniform upper bound on the rate is at most ``r``.

    Cheaper than :func:`upper_bound` because no bisection is needed: the bound
    is ``<= r`` exactly when ``r`` lies above the empirical rate and outside
    the confidence set.
    """
    if n == 0 or k / n >= r:
        return False
    return bernoulli_cs_log_evalue(k, n, r) >= math.log(1.0 / alpha)
