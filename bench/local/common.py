"""Shared pieces of the embedded-engine benchmark: ports, the HTTP readiness poller,
per-process CPU/RSS sampling from /proc, process sweeps for cleanup, and small statistics.

Everything talks to 127.0.0.1 only.
"""
from __future__ import annotations

import http.client
import os
import signal
import socket
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
Clock = Callable[[], float]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that were free a moment ago (held together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def answers_200(port: int, path: str = "/ready", timeout: float = 1.0) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_all_200(ports: Iterable[int], started: float, timeout: float = 120.0,
                 clock: Clock = time.monotonic,
                 probe: Callable[[int], bool] = answers_200) -> float:
    """Seconds from `started` until every port has answered 200 on /ready once.

    The same poller serves every peer tool, so their figures are comparable: a sweep over
    the ports still pending, then 10 ms of rest.
    """
    pending = set(ports)
    deadline = started + timeout
    while pending:
        if clock() > deadline:
            raise TimeoutError(f"{len(pending)} ports never answered 200: {sorted(pending)[:5]}")
        pending = {p for p in pending if not probe(p)}
        if pending:
            time.sleep(0.01)
    return clock() - started


# --- /proc sampling ---------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        # Field 2 (comm) may hold spaces and parentheses; everything after the last ')' is safe.
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, in seconds."""
    fields = _stat_fields(pid)  # fields[0] is field 3 (state); utime/stime are fields 14/15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children_of(pid: int) -> list[int]:
    """Direct and indirect children of `pid` (by ppid), not including `pid` itself."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


@dataclass(frozen=True)
class IdleSample:
    """CPU as percent of one core over the window, and RSS at its end (summed over pids)."""
    cpu_percent: float
    rss_mib: float
    pids: int


def sample_idle(groups: dict[str, Sequence[int]], seconds: float,
                clock: Clock = time.monotonic) -> dict[str, IdleSample]:
    """Sample several process groups over the same idle window."""
    def total_cpu(pids: Sequence[int]) -> float:
        return sum(cpu_seconds(p) for p in pids)

    before = {name: total_cpu(pids) for name, pids in groups.items()}
    t0 = clock()
    time.sleep(seconds)
    elapsed = clock() - t0
    return {name: IdleSample(cpu_percent=100.0 * (total_cpu(pids) - before[name]) / elapsed,
                             rss_mib=sum(rss_kib(p) for p in pids) / 1024.0, pids=len(pids))
            for name, pids in groups.items()}


# --- cleanup ----------------------------------------------------------------------------

def processes_with_env(marker: str) -> list[int]:
    """Live (non-zombie) processes whose environment holds the exact entry `marker`."""
    needle = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if needle in env and _stat_fields(int(entry))[0] != "Z":
                found.append(int(entry))
        except (OSError, IndexError):
            continue
    return found


def kill_all(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_gone(marker: str, timeout: float = 30.0) -> list[int]:
    """Poll until no process carries `marker`; returns what is left at the deadline."""
    deadline = time.monotonic() + timeout
    left = processes_with_env(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_with_env(marker)
    return left


# --- statistics -------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def fmt_s(value: float) -> str:
    return f"{value:.2f} s" if value == value else "n/a"


def fmt_ms(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value == value else "n/a"
