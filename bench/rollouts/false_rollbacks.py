"""Benchmark: false rollbacks of healthy canaries and detection time of a bad one.

Compares mso's anytime-valid judge with a fixed-sample z-test re-run after every
poll, on the same simulated data (1 s polls, 200 req/s, 10% canary weight).

    .venv/bin/python bench/rollouts/false_rollbacks.py [--runs 100] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from mso.analysis.judge import AnalysisConfig
from mso.analysis.simulation import RunOutcome, Scenario, SubsetProfile, run_analysis


def false_rollbacks(runs: int, seed: int, config: AnalysisConfig) -> tuple[int, int]:
    healthy = Scenario(SubsetProfile(error_rate=0.01), SubsetProfile(error_rate=0.01))
    rng = random.Random(seed)
    outcomes = [run_analysis(rng, healthy, config) for _ in range(runs)]
    judge = sum(o.judge_failed_at is not None for o in outcomes)
    naive = sum(o.naive_failed_at is not None for o in outcomes)
    return judge, naive


def detection(runs: int, seed: int, config: AnalysisConfig) -> list[RunOutcome]:
    bad = Scenario(SubsetProfile(error_rate=0.001), SubsetProfile(error_rate=0.05))
    rng = random.Random(seed)
    return [run_analysis(rng, bad, config) for _ in range(runs)]


def summary(values: list[int]) -> str:
    if not values:
        return "never"
    q = statistics.quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
    return f"median {statistics.median(values):g} (p10 {q[0]:g}, p90 {q[8]:g}, max {max(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    started = time.monotonic()
    print(f"healthy canary, 60 x 1 s polls, 200 req/s, 10% weight, 1% errors both; {args.runs} analyses")
    print("| config | mso judge false rollbacks | naive repeated z-test false rollbacks |")
    print("|---|---|---|")
    for label, config in (
        ("default (confidence 0.99, error margin 1 pt, p99 margin 25%)", AnalysisConfig()),
        ("strict (confidence 0.99, error margin 0)", AnalysisConfig(max_error_rate_increase=0.0)),
    ):
        judge, naive = false_rollbacks(args.runs, args.seed, config)
        print(f"| {label} | {judge}/{args.runs} ({judge / args.runs:.1%}) "
              f"| {naive}/{args.runs} ({naive / args.runs:.1%}) |")
    for label, config in (
        ("default config", AnalysisConfig()),
        ("strict config (error margin 0)", AnalysisConfig(max_error_rate_increase=0.0)),
    ):
        outcomes = detection(args.runs, args.seed + 1, config)
        detected = [o for o in outcomes if o.judge_failed_at is not None]
        naive_at = [o.naive_failed_at for o in outcomes if o.naive_failed_at is not None]
        print(f"\n5%-error canary vs 0.1% stable, 10% weight, 200 req/s, {label}; {args.runs} analyses")
        print(f"- mso judge rolled back within 60 polls: {len(detected)}/{args.runs}")
        print(f"- mso judge polls to rollback: {summary([o.judge_failed_at or 0 for o in detected])}")
        print("- mso judge canary requests to rollback: "
              f"{summary([o.canary_requests_at_judge_fail or 0 for o in detected])}")
        print(f"- naive repeated z-test polls to rollback: {summary(naive_at)}")
    print(f"\n(took {time.monotonic() - started:.1f} s)")


if __name__ == "__main__":
    main()
