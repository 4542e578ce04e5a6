"""Restart backoff for crashing replicas (Kubernetes CrashLoopBackOff semantics).

Pure: the clock and the jitter are injected, so tests run in microseconds. The delay
doubles from ``initial`` up to ``max``; a run that stayed up for ``reset_after`` seconds
resets it, so a replica that crashes once a day restarts quickly every time.
"""

from __future__ import annotations

import time
from typing import Callable

Clock = Callable[[], float]


def no_jitter(delay: float) -> float:
    """Identity jitter (deterministic delays)."""
    return delay


class Backoff:
    """Exponential restart delay with a cap and a reset after a healthy run."""

    def __init__(
        self,
        initial: float = 1.0,
        max: float = 300.0,
        reset_after: float = 600.0,
        clock: Clock = time.monotonic,
        jitter: Callable[[float], float] = no_jitter,
    ) -> None:
        if initial < 0 or max < initial or reset_after < 0:
            raise ValueError(
                f"invalid backoff: initial={initial} max={max} reset_after={reset_after}")
        self.initial = initial
        self.max = max
        self.reset_after = reset_after
        self.clock = clock
        self.jitter = jitter
        self._next = initial
        self._started: float | None = None

    def record_start(self, now: float | None = None) -> None:
        """Note that the process (re)started at ``now``."""
        self._started = self.clock() if now is None else now

    def reset(self) -> None:
        """Forget the failure history."""
        self._next = self.initial

    def peek(self, now: float | None = None) -> float:
        """The delay :meth:`next_delay` would return now, without consuming it."""
        if self._ran_long_enough(now):
            return self.initial
        return self._next

    def next_delay(self, now: float | None = None) -> float:
        """Delay before the next restart, given that the process has just exited at ``now``.

        Consumes one step: the following delay is doubled (capped at ``max``).
        """
        if self._ran_long_enough(now):
            self.reset()
        delay = self._next
        self._next = min(self.max, self._next * 2 if self._next > 0 else self.initial)
        self._started = None
        return max(0.0, min(self.max, self.jitter(delay)))

    def _ran_long_enough(self, now: float | None) -> bool:
        if self._started is None:
            return False
        current = self.clock() if now is None else now
        return current - self._started >= self.reset_after
