"""Open-loop HTTP load whose rate can change while it runs (a load step).

A dispatcher thread issues tickets at exact times for the current rate; a pool of worker
threads with keep-alive connections sends them. Latency is measured from each ticket's
scheduled time, so a request that waited for a free worker (the service fell behind)
counts that wait (no coordinated omission). Every request is recorded; any non-200 answer
or connection error is a failure.
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Done:
    scheduled: float  # monotonic
    finished: float
    ok: bool
    error: str = ""


class OpenLoop:
    def __init__(self, port: int, rate: float, workers: int = 200) -> None:
        self.port = port
        self.rate = rate
        self.done: list[Done] = []
        self._tickets: queue.Queue[float | None] = queue.Queue()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True)
                         for _ in range(workers)]
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True)

    def __enter__(self) -> OpenLoop:
        for t in self._threads:
            t.start()
        self._dispatcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_rate(self, rate: float) -> float:
        """Change the rate; returns the monotonic time of the change."""
        self.rate = rate
        return time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self._dispatcher.join()
        for _ in self._threads:
            self._tickets.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def snapshot(self) -> list[Done]:
        with self._lock:
            return list(self.done)

    def _dispatch(self) -> None:
        at = time.monotonic()
        while not self._stop.is_set():
            at += 1.0 / self.rate
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._tickets.put(at)

    def _work(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            ticket = self._tickets.get()
            if ticket is None:
                break
            conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                record = Done(ticket, time.monotonic(), response.status == 200,
                              "" if response.status == 200 else f"HTTP {response.status}")
                if response.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                record = Done(ticket, time.monotonic(), False, f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = None
            with self._lock:
                self.done.append(record)
        if conn is not None:
            conn.close()
