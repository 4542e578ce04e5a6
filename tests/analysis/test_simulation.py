"""Statistical guarantee under continuous monitoring, checked by seeded simulation.

200 healthy canaries are polled every interval for 60 intervals. The judge's
false-rollback rate must stay below alpha (plus binomial slack), while a naive
fixed-sample z-test repeated on the same data at every poll fires far more often.
"""

from __future__ import annotations

import random

from mso.analysis.judge import AnalysisConfig
from mso.analysis.simulation import Scenario, SubsetProfile, run_analysis

RUNS = 200


def test_false_rollbacks_stay_below_alpha_while_naive_repeated_test_inflates() -> None:
    # margin 0: the strictest setting, where the tolerance cannot mask false alarms.
    config = AnalysisConfig(max_error_rate_increase=0.0)
    healthy = Scenario(SubsetProfile(error_rate=0.01), SubsetProfile(error_rate=0.01))
    rng = random.Random(20240601)
    outcomes = [run_analysis(rng, healthy, config) for _ in range(RUNS)]
    judge_false = sum(o.judge_failed_at is not None for o in outcomes)
    naive_false = sum(o.naive_failed_at is not None for o in outcomes)
    # alpha = 1% of 200 runs is 2 expected at most; 6 is P(Bin(200, 0.01) >= 7) < 0.5% slack.
    assert judge_false <= 6
    assert naive_false >= 10  # >= 5%: the repeated fixed-sample test's alpha has inflated
    assert naive_false >= 3 * max(judge_false, 1)
    assert sum(o.final_verdict == "pass" for o in outcomes) >= RUNS - judge_false


def test_regressed_canary_is_detected_in_every_run() -> None:
    bad = Scenario(SubsetProfile(error_rate=0.001), SubsetProfile(error_rate=0.05), intervals=60)
    rng = random.Random(11)
    outcomes = [run_analysis(rng, bad, AnalysisConfig()) for _ in range(20)]
    assert all(o.judge_failed_at is not None for o in outcomes)
