"""A background worker: does one task every INTERVAL seconds, logs JSON lines to stdout,
and on SIGTERM finishes the task under way and exits 0. Standard library only."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

SERVICE = os.environ.get("MSO_SERVICE", "worker")


def log(level: str, msg: str, **fields: object) -> None:
    line = {"ts": round(time.time(), 3), "level": level, "service": SERVICE, "msg": msg, **fields}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def work(number: int) -> None:
    """One unit of work: replace with yours (read a queue, call an API...)."""
    log("info", "task done", task=number)


def run(stop: threading.Event, interval: float, task: Callable[[int], None] = work) -> int:
    """Tasks until `stop` is set; a task under way always finishes. Returns the count."""
    done = 0
    while not stop.is_set():
        task(done + 1)
        done += 1
        stop.wait(interval)
    return done


def main() -> None:
    stop = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        log("info", "draining", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log("info", "started")
    done = run(stop, float(os.environ.get("INTERVAL", "5")))
    log("info", "stopped", tasks=done)


if __name__ == "__main__":
    main()
