"""A small paced HTTP load generator for zero-failure tests (threads, keep-alive or a
new connection per request)."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    # (monotonic start, monotonic end) of each failed request, in the order of failures
    failed_spans: list[tuple[float, float]] = field(default_factory=list)
    bodies: Counter[str] = field(default_factory=Counter)  # 200 bodies and their counts

    @property
    def total(self) -> int:
        return self.ok + len(self.failures)


    def assert_only_in_flight_at(self, kills: list[float], threads: int) -> None:
        """A SIGKILLed proxy refuses nothing and times nothing out: the only requests it
        may cost are those it was serving at that moment (their connections die with
        it), so each failure started before a kill and ended within a second of it, at
        most one per client thread and kill."""
        assert not any("Refused" in f or "timed out" in f for f in self.failures), \
            self.failures
        for (start, end), failure in zip(self.failed_spans, self.failures):
            assert any(start <= kill <= end <= kill + 1.0 for kill in kills), \
                (failure, start, end, kills)
        assert len(self.failures) <= threads * len(kills), self.failures


class Load:
    """GETs `path` on `host`:`port` at about `rate` requests/s until stopped."""

    def __init__(self, port: int, rate: float = 100.0, path: str = "/",
                 threads: int = 4, method: str = "GET", keepalive: bool = True,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self.keepalive = keepalive
        self.path = path
        self.method = method
        self.interval = threads / rate
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for t in self.threads:
            t.join(timeout=30)
        return self.result

    def _run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        next_at = time.monotonic()
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            started = time.monotonic()
            try:
                conn.request(self.method, self.path,
                             headers={} if self.keepalive else {"Connection": "close"})
                response = conn.getresponse()
                body = response.read().decode(errors="replace")
                with self._lock:
                    if response.status == 200:
                        self.result.ok += 1
                        self.result.bodies[body] += 1
                    else:
                        self.result.failures.append(f"HTTP {response.status}: {body[:80]}")
                        self.result.failed_spans.append((started, time.monotonic()))
                if response.will_close:
                    conn.close()
                    conn = None
            except Exception as exc:
                with self._lock:
                    self.result.failures.append(f"{type(exc).__name__}: {exc}")
                    self.result.failed_spans.append((started, time.monotonic()))
                conn.close()
                conn = None
            next_at += self.interval
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()
        if conn is not None:
            conn.close()
