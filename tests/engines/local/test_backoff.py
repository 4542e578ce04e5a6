"""Restart backoff with an injected clock."""

from __future__ import annotations

import pytest

from mso.engines.local.backoff import Backoff


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delay_doubles_until_cap() -> None:
    b = Backoff(1.0, 10.0, 60.0, clock=FakeClock())
    assert [b.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_short_runs_do_not_reset() -> None:
    clock = FakeClock()
    b = Backoff(1.0, 100.0, 60.0, clock=clock)
    for expected in (1.0, 2.0, 4.0):
        b.record_start()
        clock.now += 59.0
        assert b.next_delay() == expected


def test_healthy_run_resets_delay() -> None:
    clock = FakeClock()
    b = Backoff(1.0, 100.0, 60.0, clock=clock)
    b.next_delay()
    b.next_delay()
    b.record_start()
    clock.now += 60.0
    assert b.peek() == 1.0
    assert b.next_delay() == 1.0
    assert b.next_delay() == 2.0


def test_jitter_is_applied_and_capped() -> None:
    b = Backoff(1.0, 4.0, 60.0, clock=FakeClock(), jitter=lambda d: d * 1.5)
    assert [b.next_delay() for _ in range(4)] == [1.5, 3.0, 4.0, 4.0]


def test_invalid_configuration_rejected() -> None:
    with pytest.raises(ValueError):
        Backoff(10.0, 1.0, 60.0)
