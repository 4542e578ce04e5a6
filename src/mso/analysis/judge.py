"""The canary judge: sequential pass/fail/inconclusive verdicts for a canary analysis step.

The rollout controller polls the proxy every ``interval`` and hands the judge
each subset's increments (:class:`SubsetWindow`). The judge keeps the
sequential state of three anytime-valid tests across polls and turns them into
a :class:`Verdict` — data, never an exception:

* error rate (:mod:`mso.analysis.errors`), at ``alpha/2``;
* p99 latency and p50 latency (:mod:`mso.analysis.latency`), at ``alpha/4`` each;

so by a union bound a healthy canary is rolled back with probability at most
``alpha = 1 - confidence`` over the whole analysis, no matter how often it is
polled. The verdict rules (:func:`assess`, a pure function):

* fewer than ``min_samples`` requests in either subset → ``inconclusive``
  (never pass, nor fail, on almost no data);
* any test rejected → ``fail``, immediately and from then on (sticky until
  :meth:`CanaryJudge.reset`);
* otherwise ``pass`` only when the controller says the analysis duration is
  over (``final=True`` / :meth:`CanaryJudge.conclude`) — a quiet e-process in a
  short window is absence of evidence, not evidence of absence — else
  ``inconclusive`` while the analysis runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from mso.analysis.errors import ErrorRateTest, ErrorTestResult
from mso.analysis.latency import LatencyTest, LatencyTestResult, histogram_quantile
from mso.analysis.windows import SnapshotError, SubsetWindow, window_from_snapshots

__all__ = [
    "AnalysisConfig",
    "CanaryJudge",
    "SnapshotError",
    "SubsetStats",
    "SubsetWindow",
    "Verdict",
    "VerdictKind",
    "assess",
    "window_from_snapshots",
]

VerdictKind = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class AnalysisConfig:
    """Settings of one canary analysis."""

    min_samples: int = 50
    """Requests each subset needs before any pass/fail verdict is given."""
    confidence: float = 0.99
    """1 - alpha: a healthy canary is rolled back with probability <= alpha."""
    max_error_rate_increase: float = 0.01
    """Tolerated absolute error-rate increase of canary over stable (0.01 = 1 point)."""
    max_latency_p99_increase: float = 0.25
    """Tolerated relative increase of canary's p99 (and p50) over stable's."""

    def __post_init__(self) -> None:
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if not 0.0 <= self.max_error_rate_increase < 1.0:
            raise ValueError("max_error_rate_increase must be in [0, 1)")
        if self.max_latency_p99_increase < 0.0:
            raise ValueError("max_latency_p99_increase must be >= 0")

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence


@dataclass(frozen=True)
class SubsetStats:
    """Cumulative point estimates for one subset over the analysis so far."""

    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Verdict:
    """Outcome of one poll, with the numbers behind it."""

    verdict: VerdictKind
    reason: str
    stable: SubsetStats
    canary: SubsetStats
    errors: ErrorTestResult
    latency_p99: LatencyTestResult
    latency_p50: LatencyTestResult
    alpha: float
    intervals: int
    final: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(
    config: AnalysisConfig,
    stable_requests: int,
    canary_requests: int,
    errors: ErrorTestResult,
    latencies: tuple[LatencyTestResult, ...],
    final: bool,
) -> tuple[VerdictKind, str]:
    """Decide the verdict from the tests' states (pure)."""
    if min(stable_requests, canary_requests) < config.min_samples:
        return "inconclusive", (
            f"collecting samples: stable {stable_requests}, canary {canary_requests}"
            f" of {config.min_samples} requests needed"
        )
    if errors.rejected:
        return "fail", (
            f"canary error rate {errors.canary_rate:.2%} vs stable {errors.stable_rate:.2%}:"
            f" increase >= {errors.increase_lower_bound:.2%} exceeds margin {errors.margin:.2%}"
            f" (anytime p={errors.p_value:.2g})"
        )
    for test in latencies:
        if test.rejected:
            share = test.canary_exceedances / max(test.canary_tested, 1)
            return "fail", (
                f"canary p{test.quantile * 100:g} latency regressed: {share:.2%} of canary"
                f" requests slower than {test.threshold_ms:g} ms (allowed {1 - test.quantile:.0%},"
                f" anytime p={test.p_value:.2g})"
            )
    if final:
        return "pass", "no regression beyond the margins detected over the analysis"
    return "inconclusive", "no regression detected so far; analysis continues"


class CanaryJudge:
    """Sequential canary analysis across poll intervals (one instance per analysis)."""

    def __init__(self, config: AnalysisConfig | None = None) -> None:
        self.config = config or AnalysisConfig()
        self.reset()

    def reset(self) -> None:
        """Forget everything: an interrupted analysis starts over and has not passed."""
        alpha = self.config.alpha
        self._errors = ErrorRateTest(alpha / 2.0, self.config.max_error_rate_increase)
        margin = self.config.max_latency_p99_increase
        self._p99 = LatencyTest(0.99, alpha / 4.0, margin)
        self._p50 = LatencyTest(0.50, alpha / 4.0, margin)
        self._bounds: tuple[float, ...] = ()
        self._hist: dict[str, list[int]] = {}
        self._intervals = 0
        self._failed: tuple[VerdictKind, str] | None = None
        self.last: Verdict | None = None

    def observe(self, stable: SubsetWindow, canary: SubsetWindow, final: bool = False) -> Verdict:
        """Fold in one poll's increments; ``final=True`` when the analysis duration is over."""
        problem = self._check_bounds(stable, canary)
        if problem is not None:
            return self._verdict(("inconclusive", problem), final)
        self._intervals += 1
        errors = self._errors.update(stable.requests, stable.errors, canary.requests, canary.errors)
        bounds = stable.latency_buckets_ms or canary.latency_buckets_ms
        p99 = self._p99.update(bounds, stable.latency_counts, canary.latency_counts)
        p50 = self._p50.update(bounds, stable.latency_counts, canary.latency_counts)
        self._add_histogram("stable", stable)
        self._add_histogram("canary", canary)
        decision = assess(
            self.config,
            self._errors.requests["stable"],
            self._errors.requests["canary"],
            errors,
            (p99, p50),
            final,
        )
        if decision[0] == "fail" and self._failed is None:
            self._failed = decision
        return self._verdict(self._failed or decision, final, errors, p99, p50)

    def conclude(self) -> Verdict:
        """Final verdict at the end of the analysis step, without new data."""
        return self.observe(SubsetWindow(0, 0), SubsetWindow(0, 0), final=True)

    def _check_bounds(self, stable: SubsetWindow, canary: SubsetWindow) -> str | None:
        for window in (stable, canary):
            bounds = window.latency_buckets_ms
            if not window.latency_counts:
                continue
            if self._bounds and bounds != self._bounds:
                return f"latency bucket bounds changed mid-analysis: {self._bounds} -> {bounds}"
            self._bounds = bounds
        return None

    def _add_histogram(self, subset: str, window: SubsetWindow) -> None:
        if not window.latency_counts:
            return
        hist = self._hist.setdefault(subset, [0] * len(window.latency_counts))
        self._hist[subset] = [a + b for a, b in zip(hist, window.latency_counts, strict=True)]

    def _stats(self, subset: str) -> SubsetStats:
        requests = self._errors.requests[subset]
        errors = self._errors.errors[subset]
        hist = self._hist.get(subset, [])
        return SubsetStats(
            requests=requests,
            errors=errors,
            error_rate=errors / requests if requests else 0.0,
            p50_ms=histogram_quantile(self._bounds, hist, 0.50),
            p99_ms=histogram_quantile(self._bounds, hist, 0.99),
        )

    def _verdict(
        self,
        decision: tuple[VerdictKind, str],
        final: bool,
        errors: ErrorTestResult | None = None,
        p99: LatencyTestResult | None = None,
        p50: LatencyTestResult | None = None,
    ) -> Verdict:
        verdict = Verdict(
            verdict=decision[0],
            reason=decision[1],
            stable=self._stats("stable"),
            canary=self._stats("canary"),
            errors=errors or self._errors.result(),
            latency_p99=p99 or self._p99.result(),
            latency_p50=p50 or self._p50.result(),
            alpha=self.config.alpha,
            intervals=self._intervals,
            final=final,
        )
        self.last = verdict
        return verdict
