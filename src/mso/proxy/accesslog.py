"""Sampled access log: one JSON line per sampled request on stderr."""
from __future__ import annotations

import json
import random
import sys
import time

_sample = 0.0


def configure(sample: float) -> None:
    global _sample
    _sample = max(0.0, min(1.0, sample))


def enabled() -> bool:
    return _sample > 0.0


def maybe_log(method: bytes, cluster: str, endpoint: str, status: int, latency_s: float) -> None:
    """Write a line for a `sample` fraction of calls; callers check `enabled()` first."""
    if random.random() >= _sample:
        return
    sys.stderr.write(json.dumps({
        "ts": round(time.time(), 3), "method": method.decode("latin-1"), "cluster": cluster,
        "endpoint": endpoint, "status": status, "latency_ms": round(latency_s * 1000, 3),
    }) + "\n")
