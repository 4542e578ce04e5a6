"""SIGKILL a replica, then measure when it left the rotation and when its replacement was READY.

Three witnesses per kill:
- the event log (`mso events -o json`): "READY -> BACKOFF" is the removal, the next "-> READY"
  of the same replica is the replacement;
- the proxy itself: a watcher pings the proxy's control socket every ~2 ms and notes when its
  route-table version moves, i.e. when the table without the dead replica was applied;
- traffic: a client sends GETs through the service's stable address the whole time and counts
  every error (a refused connection, a timeout or a non-200).
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msoapp import MsoRun, proxy_ping


@dataclass(frozen=True)
class KillSample:
    """Seconds from the SIGKILL to each milestone (nan when it was not seen)."""
    replica: str
    removed_event: float
    proxy_table: float
    replaced_ready: float


@dataclass
class TrafficResult:
    ok: int = 0
    errors: list[str] = field(default_factory=list)


class Traffic(threading.Thread):
    """GETs at about `rate` per second over one keep-alive connection (reopened on error)."""

    def __init__(self, host: str, port: int, rate: float, max_seconds: float = 600.0) -> None:
        super().__init__(daemon=True)
        self.host, self.port, self.interval = host, port, 1.0 / rate
        self.max_seconds = max_seconds
        self.result = TrafficResult()
        self._halt = threading.Event()

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        deadline = time.monotonic() + self.max_seconds
        while not self._halt.is_set() and time.monotonic() < deadline:
            conn = conn or http.client.HTTPConnection(self.host, self.port, timeout=5.0)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    self.result.ok += 1
                else:
                    self.result.errors.append(f"{time.time():.3f} status {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.result.errors.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
                conn.close()
                conn = None
            self._halt.wait(self.interval)
        if conn is not None:
            conn.close()

    def stop(self) -> TrafficResult:
        self._halt.set()
        self.join(timeout=10)
        return self.result


class ProxyWatcher(threading.Thread):
    """Records (wall time, version) each time the proxy's route-table version changes."""

    def __init__(self, control: Path, max_seconds: float = 600.0) -> None:
        super().__init__(daemon=True)
        self.control = control
        self.max_seconds = max_seconds
        self.changes: list[tuple[float, int]] = []
        self.error: str | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5.0)
                sock.connect(str(self.control))
                last = -1
                while not self._halt.is_set() and time.monotonic() < deadline:
                    version = int(proxy_ping(self.control, sock)["version"])
                    if version != last:
                        self.changes.append((time.time(), version))
                        last = version
                    self._halt.wait(0.002)
        except (OSError, ValueError, KeyError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def first_change_after(self, t: float) -> float:
        return next((ts - t for ts, _ in self.changes if ts >= t), float("nan"))


def wait_replaced(run: MsoRun, replica: str, old_pid: int, timeout: float = 30.0) -> None:
    """Poll the API (in-process, light) until `replica` is READY under a new pid."""
    from mso.cli.client import ApiClient
    from mso.paths import StatePaths
    client = ApiClient(StatePaths.for_manifest(run.folder / "mso.yaml"), timeout=10.0)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            reps = client.get("/v1/ps")["replicas"]
            if any(r["replica"] == replica and r["state"] == "READY" and r["pid"] != old_pid
                   for r in reps):
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise TimeoutError(f"{replica} was not READY again within {timeout}s")


def samples_from_events(events: list[dict[str, Any]], kills: list[tuple[str, float]],
                        watcher: ProxyWatcher | None = None) -> list[KillSample]:
    """Pure over the event log: pair each (replica, kill time) with its BACKOFF and READY."""
    out = []
    for replica, t_kill in kills:
        mine = [e for e in events if e["type"] == "replica.state" and e["replica"] == replica
                and float(e["ts"]) >= t_kill]
        backoff = next((float(e["ts"]) for e in mine if e["data"].get("from") == "READY"
                        and e["data"].get("to") == "BACKOFF"), float("nan"))
        ready = next((float(e["ts"]) for e in mine if e["data"].get("to") == "READY"
                      and float(e["ts"]) > backoff), float("nan"))
        proxy = watcher.first_change_after(t_kill) if watcher else float("nan")
        out.append(KillSample(replica, backoff - t_kill, proxy, ready - t_kill))
    return out


def kill_loop(run: MsoRun, service: str, kills: int, settle: float,
              failures: list[str] | None = None) -> list[tuple[str, float]]:
    """SIGKILL READY replicas of `service` in turn; returns (replica, wall time of the kill).

    A replica not READY again within the timeout is recorded in `failures` with its last
    events (the samples show it as not seen) and the loop goes on with another victim.
    """
    done: list[tuple[str, float]] = []
    for k in range(kills):
        reps = sorted((r for r in run.json("ps")["replicas"] if r["service"] == service),
                      key=lambda r: str(r["replica"]))
        ready = [r for r in reps if r["state"] == "READY"]
        if not ready:
            raise RuntimeError(f"no READY replica of {service} left: {reps}")
        victim = ready[k % len(ready)]
        t_kill = time.time()
        os.kill(int(victim["pid"]), signal.SIGKILL)
        done.append((str(victim["replica"]), t_kill))
        try:
            wait_replaced(run, str(victim["replica"]), int(victim["pid"]))
        except TimeoutError as exc:
            if failures is None:
                raise
            failures.append(f"{exc}; its events: {recent_events(run, str(victim['replica']))}")
            print(f"  {failures[-1]}", flush=True)
            continue
        # Backoff grows with consecutive restarts unless the replica stayed up `reset_after`;
        # waiting that long keeps every kill measuring the first-restart delay.
        time.sleep(settle)
    return done


def recent_events(run: MsoRun, replica: str, count: int = 4) -> str:
    try:
        events = [e for e in run.events() if e["replica"] == replica][-count:]
    except Exception as exc:  # diagnostics only: never hide the original failure
        return f"(events unavailable: {exc})"
    return " | ".join(f"{e['ts']:.3f} {e['message']}" for e in events)
