"""Sampled access log: one JSON line per sampled request on stderr."""
from __future__ import annotations

import json
import random
import sys
import time

# Read directly on the hot path (`if accesslog.sample:`): cheaper than a call.
sample = 0.0


def configure(fraction: float) -> None:
    global sample
    sample = max(0.0, min(1.0, fraction))


def maybe_log(method: bytes, cluster: str, endpoint: str, status: int, latency_s: float) -> None:
    """Write a line for a `sample` fraction of calls; callers check `sample` first."""
    if random.random() >= sample:
        return
    sys.stderr.write(json.dumps({
        "ts": round(time.time(), 3), "method": method.decode("latin-1"), "cluster": cluster,
        "endpoint": endpoint, "status": status, "latency_ms": round(latency_s * 1000, 3),
    }) + "\n")
