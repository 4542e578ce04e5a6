"""Following a rollout to its end: `mso rollout status -w` (and `mso deploy --wait`).

`wait_rollout` polls a callable that returns the rollout status dict (the shape of
`RolloutController.status`: the local API's answer and `RemoteEngine.rollout(loaded,
"status", service)` are the same), reports each change of phase, step, weight, replicas
updated or reason once, and returns when the rollout has ended or the time is up. The
clock and the sleep are parameters, so the loop is tested without waiting.

Decisions:
* Exit codes as `kubectl rollout status`: 0 when the rollout ends Promoted, 1 when it ends
  RolledBack or Failed, or when the timeout runs out first. A service with no active
  rollout answers at once with its last outcome (no rollout at all: 0, nothing to wait
  for).
* It follows the service, not one release: if a `mso deploy` supersedes the rollout
  being watched, the status shows the new rollout and the watch goes on with it (the
  change line names the new releases), as kubectl follows a Deployment.
* Errors of the callable (the daemon went away, the cluster is unreachable) propagate:
  the caller turns them into its one-line error.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Status = dict[str, Any]

OUTCOMES = {"Promoted": 0, "RolledBack": 1, "Failed": 1}


@dataclass(frozen=True)
class Outcome:
    code: int  # 0 promoted (or nothing to wait for), 1 rolled back, failed or timed out
    status: Status  # the last status seen
    timed_out: bool = False
    timeout: float | None = None

    @property
    def message(self) -> str:
        """One line saying how it ended (for stdout on success, stderr otherwise)."""
        s = self.status
        service = s.get("service", "?")
        if not s.get("strategy"):
            return f"{service}: no rollout to wait for"
        target = f"release {s.get('to_release')}"
        if self.timed_out:
            waited = f" after {self.timeout:g}s" if self.timeout is not None else ""
            return (f"{service}: timed out{waited} waiting for {target}: still "
                    f"{s.get('phase')}{_at(s)}: {s.get('reason') or 'no reason given'}")
        phase = s.get("phase")
        if phase == "Promoted":
            return f"{service}: {target} promoted"
        word = "rolled back" if phase == "RolledBack" else "failed"
        return f"{service}: {target} {word}: {s.get('reason') or 'no reason given'}"


def _at(s: Status) -> str:
    if s.get("step") and s.get("steps"):
        current = s.get("current_step")
        return f" at step {s['step']}/{s['steps']}" + (f" ({current})" if current else "")
    return ""


def change_key(s: Status) -> tuple[Any, ...]:
    """What makes a new line: phase, step, weight, replicas updated, reason (and which
    rollout: a superseding deploy starts another one)."""
    replicas = s.get("replicas") or {}
    return (s.get("from_release"), s.get("to_release"), s.get("phase"), s.get("step"),
            s.get("weight"), replicas.get("updated"), s.get("reason"))


def change_line(s: Status, now: float | None = None) -> str:
    """`12:00:03 echo 1 -> 2 canary Inconclusive step 2/4 weight 20%: analysis inconclusive: ...`"""
    ts = dt.datetime.fromtimestamp(time.time() if now is None else now).strftime("%H:%M:%S")
    service = s.get("service", "?")
    if not s.get("strategy"):
        return f"{ts} {service}: no rollout yet"
    parts = [ts, f"{service} {s.get('from_release')} -> {s.get('to_release')}",
             str(s.get("strategy")), str(s.get("phase"))]
    if s.get("step") and s.get("steps"):
        parts.append(f"step {s['step']}/{s['steps']}")
    if s.get("strategy") in ("canary", "blue_green") and s.get("weight") is not None:
        parts.append(f"weight {s['weight']}%")
    replicas = s.get("replicas") or {}
    if replicas.get("wanted"):
        parts.append(f"{replicas.get('updated', 0)}/{replicas['wanted']} updated")
    line = " ".join(parts)
    return f"{line}: {s['reason']}" if s.get("reason") else line


def wait_rollout(get_status: Callable[[], Status], *,
                 on_change: Callable[[Status], None],
                 timeout: float | None = None, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Poll `get_status` every `interval` seconds until the rollout ends (or `timeout`
    seconds passed); `on_change` gets the first status and every changed one."""
    ends = None if timeout is None else clock() + timeout
    last: tuple[Any, ...] | None = None
    while True:
        status = get_status()
        key = change_key(status)
        if key != last:
            on_change(status)
            last = key
        if not status.get("strategy"):
            return Outcome(0, status)
        phase = status.get("phase")
        if phase in OUTCOMES:
            return Outcome(OUTCOMES[str(phase)], status)
        if ends is not None:
            left = ends - clock()
            if left <= 0:
                return Outcome(1, status, timed_out=True, timeout=timeout)
            sleep(min(interval, left))
        else:
            sleep(interval)
