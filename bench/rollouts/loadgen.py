"""Paced HTTP load for the rollout benchmark: every answer is recorded, every failure counted.

Threads with keep-alive connections GET / on 127.0.0.1:PORT at a fixed total rate. Each
response becomes a :class:`Sample` (wall-clock time, status, which replica answered and
with which release), so the benchmark can tell when the canary first and last answered.
Any non-2xx status and any connection error counts as a failure users would have seen.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class Sample:
    """One request as the client saw it; `status` 0 means a connection-level error."""

    at: float
    status: int
    replica: str
    release: int | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def parse_body(status: int, body: str) -> tuple[str, int | None]:
    """(replica, release) from the echo app's body.

    200 bodies read "<replica> <release> <greeting>"; injected 500s read
    "error from <replica>" and carry no release.
    """
    words = body.split()
    if status == 200 and len(words) >= 2:
        try:
            return words[0], int(words[1])
        except ValueError:
            return words[0], None
    if words[:2] == ["error", "from"] and len(words) >= 3:
        return words[2], None
    return "", None


class Load:
    """GET / at about `rate` requests/s in total, until stopped (or `max_seconds` passed)."""

    def __init__(self, port: int, rate: float, threads: int = 4, max_seconds: float = 900.0,
                 clock: Clock = time.time) -> None:
        self.port = port
        self.interval = threads / rate
        self.max_seconds = max_seconds
        self.clock = clock
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Sample]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.snapshot()

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def count(self) -> int:
        with self._lock:
            return len(self.samples)

    def _record(self, sample: Sample) -> None:
        with self._lock:
            self.samples.append(sample)

    def _one(self, conn: http.client.HTTPConnection) -> bool:
        """One request; True when the connection can be reused."""
        conn.request("GET", "/")
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        replica, release = parse_body(response.status, body)
        error = "" if response.status == 200 else f"HTTP {response.status}: {body[:60]}"
        self._record(Sample(self.clock(), response.status, replica, release, error))
        return not response.will_close

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        started = next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            current = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            conn = current
            try:
                if not self._one(current):
                    current.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._record(Sample(self.clock(), 0, "", None, f"{type(exc).__name__}: {exc}"))
                current.close()
                conn = None
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                # Behind schedule (a slow answer): do not burst to catch up.
                next_at = time.monotonic()
        if conn is not None:
            conn.close()
