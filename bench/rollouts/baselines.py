"""What the peers' settings would take for the same bad canary, and where mso's judge floor is.

Flagger and Argo Rollouts decide on fixed-interval metric checks, so their time to roll back
is arithmetic over their settings, not a measurement (no Kubernetes here):

* Flagger rolls back when the failed checks reach `analysis.threshold`; checks run every
  `analysis.interval`. Neither has a useful default: the documented examples use
  `interval: 1m` and `threshold: 5` (some `threshold: 10`), so 5 x 60 s.
* Argo Rollouts fails an AnalysisRun when failed measurements exceed `failureLimit`
  (default 0, i.e. the first failed measurement), measured every `interval` (no default:
  without it a metric is measured once; the docs' examples use 60 s and 5 m, often with
  `failureLimit: 3`).

`judge_floor` computes, from mso's own confidence sequences, the fewest canary requests at
which a canary showing `canary_rate` errors (stable: none) clears the error margin at all,
the gate that a rollback needs besides the e-process rejecting.
"""

from __future__ import annotations

from dataclasses import dataclass

from mso.analysis.sequential import lower_bound, upper_bound


@dataclass(frozen=True)
class PeerEstimate:
    tool: str
    settings: str
    seconds: float

    def failed_requests(self, rate: float, weight: float, error_rate: float) -> float:
        """Errors users see while the bad canary keeps its share of the traffic."""
        return self.seconds * rate * weight * error_rate


def peer_estimates() -> list[PeerEstimate]:
    return [
        PeerEstimate("Flagger", "`interval: 1m`, `threshold: 5` (documented example; "
                     "no defaults)", 60.0 * 5),
        PeerEstimate("Argo Rollouts", "`interval: 60s`, `failureLimit: 0` (the default: "
                     "fail on the first failed measurement)", 60.0 * (0 + 1)),
        PeerEstimate("Argo Rollouts", "`interval: 60s`, `failureLimit: 3` (documented "
                     "example)", 60.0 * (3 + 1)),
    ]


def clears_margin(n: int, canary_rate: float, canary_share: float, confidence: float,
                  margin: float) -> bool:
    """Whether `n` canary requests at `canary_rate` (stable error-free) clear the margin."""
    # The error test runs at alpha/2 and each confidence sequence at half of that.
    alpha = (1.0 - confidence) / 4.0
    stable_n = round(n * (1.0 - canary_share) / canary_share)
    low = lower_bound(round(n * canary_rate), n, alpha)
    return low - upper_bound(0, stable_n, alpha) > margin


def judge_floor(canary_rate: float, canary_share: float, confidence: float, margin: float,
                limit: int = 20000) -> int | None:
    """Fewest canary requests (in steps of 5) at which the margin gate can open."""
    for n in range(5, limit + 1, 5):
        if clears_margin(n, canary_rate, canary_share, confidence, margin):
            return n
    return None
