"""Tests for the canary judge's verdicts (mso.analysis.judge)."""

from __future__ import annotations

import random

import pytest

from mso.analysis.judge import AnalysisConfig, CanaryJudge, SubsetWindow, Verdict
from mso.analysis.simulation import SubsetProfile, simulate_window

HEALTHY = SubsetProfile(error_rate=0.001)


def poll(judge: CanaryJudge, rng: random.Random, canary: SubsetProfile, intervals: int,
         rps: int = 200, weight: float = 0.1, final_last: bool = False) -> list[Verdict]:
    out = []
    for t in range(intervals):
        canary_n = round(rps * weight)
        out.append(judge.observe(
            simulate_window(rng, rps - canary_n, HEALTHY),
            simulate_window(rng, canary_n, canary),
            final=final_last and t == intervals - 1,
        ))
    return out


def test_below_min_samples_is_inconclusive_even_when_final() -> None:
    judge = CanaryJudge(AnalysisConfig(min_samples=50))
    verdict = judge.observe(SubsetWindow(100, 0), SubsetWindow(10, 10), final=True)
    assert verdict.verdict == "inconclusive"
    assert "collecting samples" in verdict.reason


def test_no_data_never_passes() -> None:
    assert CanaryJudge().conclude().verdict == "inconclusive"


def test_healthy_canary_is_inconclusive_during_analysis_and_passes_at_the_end() -> None:
    judge = CanaryJudge()
    verdicts = poll(judge, random.Random(1), HEALTHY, 30, final_last=True)
    assert {v.verdict for v in verdicts[:-1]} == {"inconclusive"}
    final = verdicts[-1]
    assert final.verdict == "pass" and final.final
    assert final.canary.requests == 600 and final.stable.requests == 5400
    assert final.stable.p50_ms is not None and 10 < final.stable.p50_ms < 30
    assert final.errors.p_value > final.alpha


def test_five_percent_errors_fail_fast_and_stay_failed() -> None:
    judge = CanaryJudge()
    verdicts = poll(judge, random.Random(2), SubsetProfile(error_rate=0.05), 60)
    first = next(i for i, v in enumerate(verdicts) if v.verdict == "fail")
    assert verdicts[first].canary.requests <= 800
    assert "error rate" in verdicts[first].reason
    assert all(v.verdict == "fail" for v in verdicts[first:])
    assert judge.conclude().verdict == "fail"


def test_p99_plus_200ms_fails() -> None:
    judge = CanaryJudge()
    slow = SubsetProfile(error_rate=0.001, slow_fraction=0.05, slow_extra_ms=200.0)
    verdicts = poll(judge, random.Random(3), slow, 60)
    failed = [v for v in verdicts if v.verdict == "fail"]
    assert failed and "p99" in failed[0].reason
    assert failed[0].canary.p99_ms is not None and failed[0].canary.p99_ms > 150


def test_error_increase_within_margin_passes() -> None:
    judge = CanaryJudge(AnalysisConfig(max_error_rate_increase=0.05))
    verdicts = poll(judge, random.Random(4), SubsetProfile(error_rate=0.02), 60, weight=0.5,
                    final_last=True)
    assert verdicts[-1].verdict == "pass"


def test_weight_changes_mid_analysis_do_not_cause_rollback() -> None:
    judge = CanaryJudge(AnalysisConfig(max_error_rate_increase=0.0))
    rng = random.Random(5)
    same = SubsetProfile(error_rate=0.05)
    for weight in (0.05, 0.25, 0.5):
        for _ in range(20):
            n_c = round(200 * weight)
            v = judge.observe(simulate_window(rng, 200 - n_c, same), simulate_window(rng, n_c, same))
            assert v.verdict != "fail"
    assert judge.conclude().verdict == "pass"


def test_reset_forgets_a_failure_and_requires_fresh_samples() -> None:
    judge = CanaryJudge()
    poll(judge, random.Random(6), SubsetProfile(error_rate=0.5), 20)
    assert judge.last is not None and judge.last.verdict == "fail"
    judge.reset()
    assert judge.last is None
    assert judge.conclude().verdict == "inconclusive"


def test_changed_bucket_bounds_give_inconclusive_not_an_exception() -> None:
    judge = CanaryJudge()
    judge.observe(SubsetWindow(10, 0, (1.0, 2.0), (5, 5, 0)), SubsetWindow(0, 0))
    v = judge.observe(SubsetWindow(10, 0, (1.0, 5.0), (5, 5, 0)), SubsetWindow(0, 0))
    assert v.verdict == "inconclusive" and "bounds" in v.reason


def test_verdict_serialises_to_plain_data() -> None:
    data = CanaryJudge().conclude().to_dict()
    assert data["verdict"] == "inconclusive"
    assert set(data["stable"]) == {"requests", "errors", "error_rate", "p50_ms", "p99_ms"}
    assert {"e_value", "p_value"} <= set(data["errors"]) and "threshold_ms" in data["latency_p99"]


def test_config_validates_itself() -> None:
    with pytest.raises(ValueError):
        AnalysisConfig(confidence=1.0)
    with pytest.raises(ValueError):
        AnalysisConfig(min_samples=0)
    assert AnalysisConfig().alpha == pytest.approx(0.01)
