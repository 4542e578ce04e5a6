"""Pure measurements for the rollout benchmark: client samples + event log -> figures.

Two clocks see a bad canary, and both are reported:

* the client's: from the first answer by a canary replica to the last one;
* the control plane's: from the `rollout.progressing` "weight set" event to the
  `rollout.rolledback` event (weight 0).

Canary replicas are recognised by the release they print in 200 answers (the echo app's
injected 500s print only the replica name, so they are attributed through that name).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loadgen import Sample


@dataclass(frozen=True)
class CanaryTrial:
    """One bad-canary rollout under load."""

    first_canary: float        # wall time of the first answer by a canary replica
    last_canary: float         # wall time of the last one
    weight_set: float          # "weight set" event
    analysis_failed: float     # `analysis.fail` event (nan if none)
    rolled_back: float         # `rollout.rolledback` event (nan if none)
    failed: int                # non-2xx or connection errors seen by the client
    total: int                 # requests the client sent during the trial
    canary_answers: int        # answers by canary replicas
    judge_canary_requests: int  # canary requests the judge had counted when it failed
    rate: float                # requests/s the client achieved while the canary answered
    canary_share: float        # share of those answered by the canary
    outcome: str = "RolledBack"  # the rollout's final phase

    @property
    def client_seconds(self) -> float:
        return self.last_canary - self.first_canary

    @property
    def event_seconds(self) -> float:
        return self.rolled_back - self.weight_set


def canary_replicas(samples: Sequence[Sample], release: int) -> set[str]:
    return {s.replica for s in samples if s.release == release and s.replica}


def first_event(events: Sequence[dict[str, Any]], kind: str, contains: str = "") -> \
        dict[str, Any] | None:
    return next((e for e in events if e["type"] == kind and contains in e["message"]), None)


def canary_trial(samples: Sequence[Sample], events: Sequence[dict[str, Any]],
                 release: int, outcome: str = "RolledBack") -> CanaryTrial:
    """Figures of one trial from its client samples and the events it produced."""
    names = canary_replicas(samples, release)
    canary_at = [s.at for s in samples if s.replica in names]
    weight = first_event(events, "rollout.progressing", "weight set")
    failed = first_event(events, "analysis.fail")
    back = first_event(events, "rollout.rolledback")
    window = between(samples, min(canary_at, default=0.0), max(canary_at, default=0.0))
    span = max(canary_at, default=0.0) - min(canary_at, default=0.0)
    judged = 0
    if failed is not None:
        judged = int(((failed.get("data") or {}).get("canary") or {}).get("requests", 0))
    nan = float("nan")
    return CanaryTrial(
        first_canary=min(canary_at, default=nan), last_canary=max(canary_at, default=nan),
        weight_set=float(weight["ts"]) if weight else nan,
        analysis_failed=float(failed["ts"]) if failed else nan,
        rolled_back=float(back["ts"]) if back else nan,
        failed=sum(not s.ok for s in samples), total=len(samples),
        canary_answers=len(canary_at), judge_canary_requests=judged,
        rate=len(window) / span if span > 0 else nan,
        canary_share=len(canary_at) / len(window) if window else nan, outcome=outcome)


@dataclass(frozen=True)
class Spread:
    median: float
    max: float
    values: tuple[float, ...]


def spread(values: Sequence[float]) -> Spread:
    seen = tuple(v for v in values if not math.isnan(v))
    if not seen:
        return Spread(float("nan"), float("nan"), ())
    return Spread(float(statistics.median(seen)), max(seen), seen)


@dataclass(frozen=True)
class RollingUpdate:
    """One rolling update of every replica under load."""

    seconds: float   # deploy -> all replicas READY on the new release and Promoted
    failed: int
    total: int
    errors: tuple[str, ...]


def rolling_update(samples: Sequence[Sample], seconds: float) -> RollingUpdate:
    bad = tuple(s.error for s in samples if not s.ok)
    return RollingUpdate(seconds, len(bad), len(samples), bad[:5])


def between(samples: Sequence[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.at <= end]
