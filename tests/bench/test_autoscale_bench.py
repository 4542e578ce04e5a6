"""bench/autoscale/run.py: when a load step counts as met."""
from __future__ import annotations

from bench.autoscale.openloop import Done
from bench.autoscale.run import met_at


def _second(start: float, count: int, latency: float) -> list[Done]:
    return [Done(start + i / count, start + i / count + latency, True) for i in range(count)]


def test_the_load_is_met_from_the_first_of_five_good_seconds() -> None:
    done: list[Done] = []
    for second in range(12):
        slow = second < 4  # a backlog: answered, but late
        done += _second(100.0 + second, 400, 0.5 if slow else 0.01)
    assert met_at(done, 100.0, 400.0) == 4.0


def test_too_few_answers_or_too_few_seconds_is_not_met() -> None:
    thin = [d for s in range(8) for d in _second(100.0 + s, 300, 0.01)]
    assert met_at(thin, 100.0, 400.0) is None
    short = [d for s in range(4) for d in _second(100.0 + s, 400, 0.01)]
    assert met_at(short, 100.0, 400.0) is None
