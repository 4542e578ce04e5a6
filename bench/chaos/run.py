"""Issue 15 part 3: a chaos run on the embedded engine.

The echo app (3 replicas, canary rollouts with analysis) takes 200 GETs/s through the
gateway (a new connection per request, 4 threads) while, every `--every` seconds, a
random fault hits a random process of mso's:

    replica  SIGKILL, or SIGSTOP for 2-12 s (one replica stopped at a time, so at least
             one of the three is always up: no orchestrator serves with none)
    proxy    SIGKILL, or SIGSTOP for 1-8 s (over ~6 s the watchdog kills it)
    daemon   SIGKILL, or SIGSTOP for 2-8 s (over ~4 s its keeper's watchdog kills it)

Halfway through, a new version is deployed as a canary (`mso deploy`, retried while
the daemon is down). When the time is up the faults stop, every stopped process is
continued, and the run waits for the app to settle. It reports:

- failed GETs, split into refused (must be 0), in flight in a proxy at the instant it
  was SIGKILLed (those connections die with the process: reported, not a goal miss),
  and other (goal 0);
- orphan processes (carrying the app's instance marker but belonging to no replica,
  proxy or spare mso knows) and duplicates (more replicas than desired, more than one
  daemon or keeper): goal 0;
- `PRAGMA integrity_check` of the state database: ok;
- the rollout's final phase: Promoted (the new version is healthy).

Exits 1 when a goal is missed. `--duration 600` is the benchmark (written to
docs/benchmarks.md unless --no-write); the test suite runs a short one
(tests/e2e/test_chaos.py).

Usage: .venv/bin/python bench/chaos/run.py [--duration 600] [--every 3] [--seed N]
       [--no-write]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.docs_section import write_section  # noqa: E402

from tests.e2e.harness import MsoApp, instance_processes, wait_for  # noqa: E402

SECTION = "## Chaos (issue 15)"
RATE = 200.0
THREADS = 4
MANIFEST = """
app: chaos
gateway: {port: GATEWAY_PORT}
routes:
  - {path: /, service: echo}
services:
  echo:
    run: [PYTHON, ECHO_APP]
    replicas: 3
    ports: {http: 8000}
    env: {GREETING: "@VERSION@"}
    health:
      readiness: {http: /ready, period: 500ms, timeout: 1s, failure_threshold: 2}
      liveness: {http: /healthz, period: 1s, timeout: 2s, failure_threshold: 3}
    backoff: {initial: 200ms, max: 2s, reset_after: 10s}
    stop: {grace: 3s}
    rollout:
      strategy: canary
      progress_deadline: 120s
      steps:
        - set_weight: 34
        - analysis: {duration: 5s}
        - set_weight: 67
        - analysis: {duration: 5s}
      analysis: {interval: 500ms, min_samples: 40, max_error_rate_increase: 0.05}
"""


# --- load --------------------------------------------------------------------------------
@dataclass
class Trace:
    requests: list[tuple[float, float, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def load(port: int, stop: threading.Event, trace: Trace) -> None:
    interval = THREADS / RATE
    next_at = time.monotonic()
    while not stop.is_set():
        start = time.monotonic()
        error: str | None = None
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                error = f"HTTP {response.status}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        with trace.lock:
            trace.requests.append((start, time.monotonic(), error))
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()


# --- the processes of the app -------------------------------------------------------------
def meta_pid(app: MsoApp, key: str) -> int | None:
    try:
        db = sqlite3.connect(f"file:{app.folder / '.mso' / 'state.db'}?mode=ro", uri=True,
                             timeout=5)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None
    return int(json.loads(row[0])["pid"]) if row else None


def daemon_pid(app: MsoApp) -> int | None:
    try:
        return int((app.folder / ".mso" / "daemon.lock").read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def cmdline_pids(*needles: bytes) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if all(any(n in a for a in argv) for n in needles):
            found.append(int(entry))
    return found


def replica_pids(app: MsoApp) -> list[int]:
    return [r["pid"] for r in app.ps() if r.get("pid")]


@dataclass
class Chaos:
    app: MsoApp
    rng: random.Random
    stopped: dict[int, float] = field(default_factory=dict)  # pid -> continue at
    log: list[tuple[float, str, str]] = field(default_factory=list)  # (t, target, fault)
    proxy_kills: list[float] = field(default_factory=list)
    replicas: list[int] = field(default_factory=list)

    def resume_due(self, now: float) -> None:
        for pid, at in list(self.stopped.items()):
            if now >= at:
                self._cont(pid)

    def _cont(self, pid: int) -> None:
        self.stopped.pop(pid, None)
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass

    def resume_all(self) -> None:
        for pid in list(self.stopped):
            self._cont(pid)

    def strike(self) -> None:
        target = self.rng.choice(["replica", "replica", "proxy", "daemon"])
        kill = self.rng.random() < 0.5
        if target == "replica":
            try:
                self.replicas = replica_pids(self.app)  # the daemon may be down: keep
            except Exception:  # the last list
                pass
            candidates = [p for p in self.replicas if p not in self.stopped]
            pid = self.rng.choice(candidates) if candidates else None
            pause = (2.0, 12.0)
            if any(p in self.stopped for p in self.replicas):
                kill = True  # one replica hung at a time: two would leave one of three
        elif target == "proxy":
            pid, pause = meta_pid(self.app, "proxy_process"), (1.0, 8.0)
        else:
            pid, pause = daemon_pid(self.app), (2.0, 8.0)
        if pid is None or pid in self.stopped:
            return
        now = time.monotonic()
        try:
            if kill:
                os.kill(pid, signal.SIGKILL)
                if target == "proxy":
                    self.proxy_kills.append(now)
                self.log.append((now, target, "SIGKILL"))
            else:
                os.kill(pid, signal.SIGSTOP)
                length = self.rng.uniform(*pause)
                self.stopped[pid] = now + length
                self.log.append((now, target, f"SIGSTOP {length:.1f}s"))
        except ProcessLookupError:
            pass


def deploy(app: MsoApp, version: str, until: float) -> bool:
    app.write(MANIFEST.replace("@VERSION@", version))
    while time.monotonic() < until:
        if app.cli("deploy", check=False, timeout=60).returncode == 0:
            return True
        time.sleep(1.0)
    return False


def rollout_phase(app: MsoApp) -> str:
    try:
        return str(app.json("rollout", "status", "echo").get("phase"))
    except Exception:
        return "unknown"


def settle(app: MsoApp, timeout: float) -> tuple[bool, str]:
    """Wait for 3 READY replicas of one release and a finished rollout."""
    deadline = time.monotonic() + timeout
    phase = "unknown"
    while time.monotonic() < deadline:
        try:
            phase = rollout_phase(app)
            reps = app.ps()
            if (phase not in ("Progressing", "Paused", "unknown") and len(reps) == 3
                    and all(r["state"] == "READY" for r in reps)
                    and len({r["release"] for r in reps}) == 1):
                return True, phase
        except Exception:
            pass
        time.sleep(0.5)
    return False, phase


def orphans_and_duplicates(app: MsoApp) -> tuple[list[str], list[str]]:
    state = str(app.folder / ".mso").encode()
    known = set(replica_pids(app))
    for key in ("proxy_process", "proxy_spare"):
        pid = meta_pid(app, key)
        if pid is not None:
            known.add(pid)
    daemons = cmdline_pids(b"mso.daemon", b"--state-dir", state)
    keepers = [p for p in daemons if p in cmdline_pids(b"mso.daemon.keeper")]
    daemons = [p for p in daemons if p not in keepers]
    marked = instance_processes(app.instance or "")
    orphans = [f"pid {p}: {open(f'/proc/{p}/cmdline', 'rb').read()[:80]!r}"
               for p in marked if p not in known and p not in daemons]
    duplicates = []
    if len(daemons) > 1:
        duplicates.append(f"{len(daemons)} daemons: {daemons}")
    if len(keepers) > 1:
        duplicates.append(f"{len(keepers)} keepers: {keepers}")
    proxies = [p for p in marked if p in cmdline_pids(b"mso.proxy")]
    if len(proxies) > 2:
        duplicates.append(f"{len(proxies)} proxies (one serving and one spare expected)")
    echo = [p for p in marked if p in cmdline_pids(b"echo.py")]
    if len(echo) > 3:
        duplicates.append(f"{len(echo)} echo replicas running for 3 desired")
    return orphans, duplicates


def integrity(app: MsoApp) -> str:
    db = sqlite3.connect(f"file:{app.folder / '.mso' / 'state.db'}?mode=ro", uri=True)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def run(duration: float, every: float, seed: int, work: Path) -> dict[str, Any]:
    folder = work / "app"
    folder.mkdir(parents=True)
    app = MsoApp(folder)
    rng = random.Random(seed)
    try:
        app.write(MANIFEST.replace("@VERSION@", "v1"))
        app.up(timeout=120)
        chaos = Chaos(app, rng)
        trace, stop = Trace(), threading.Event()
        threads = [threading.Thread(target=load, args=(app.gateway_port, stop, trace))
                   for _ in range(THREADS)]
        for t in threads:
            t.start()
        started = time.monotonic()
        end = started + duration
        deployed: bool | None = None
        next_strike = started + every
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                chaos.resume_due(now)
                if deployed is None and now >= started + duration / 2:
                    deployed = deploy(app, "v2", until=end)
                if now >= next_strike:
                    chaos.strike()
                    next_strike = now + rng.uniform(0.5 * every, 1.5 * every)
                time.sleep(0.05)
        finally:
            chaos.resume_all()
        settled, phase = settle(app, timeout=180)
        stop.set()
        for t in threads:
            t.join()
        orphans, duplicates = orphans_and_duplicates(app)
        refused = in_flight = 0
        other: list[str] = []
        for start, finish, error in trace.requests:
            if error is None:
                continue
            if "Refused" in error:
                refused += 1
            elif any(start <= k <= finish for k in chaos.proxy_kills):
                in_flight += 1
            else:
                other.append(error)
        releases = {r["release"] for r in app.ps()}
        return {
            "seed": seed, "duration": duration, "requests": len(trace.requests),
            "refused": refused, "in_flight_at_proxy_kill": in_flight, "other": len(other),
            "other_examples": Counter(other).most_common(5),
            "faults": Counter(f"{t} {f.split()[0]}" for _, t, f in chaos.log),
            "deployed": bool(deployed), "phase": phase, "settled": settled,
            "releases": sorted(releases), "orphans": orphans, "duplicates": duplicates,
            "integrity": integrity(app),
        }
    finally:
        app.teardown()


def goals_missed(r: dict[str, Any]) -> list[str]:
    missed = []
    if r["refused"]:
        missed.append(f"{r['refused']} refused connections")
    if r["other"]:
        missed.append(f"{r['other']} failed GETs: {r['other_examples']}")
    if r["orphans"]:
        missed.append(f"orphans: {r['orphans']}")
    if r["duplicates"]:
        missed.append(f"duplicates: {r['duplicates']}")
    if r["integrity"] != "ok":
        missed.append(f"integrity_check: {r['integrity']}")
    if not r["deployed"]:
        missed.append("the canary could not be deployed")
    if r["phase"] != "Promoted" or r["releases"] != [2]:
        missed.append(f"rollout ended {r['phase']} on releases {r['releases']} "
                      "(expected Promoted on release 2)")
    if not r["settled"]:
        missed.append("the app did not settle within 180 s after the faults stopped")
    return missed


def report(r: dict[str, Any], every: float) -> str:
    faults = ", ".join(f"{n} {k}" for k, n in sorted(r["faults"].items()))
    return "\n".join([
        SECTION, "",
        f"`.venv/bin/python bench/chaos/run.py --duration {r['duration']:g} --every {every:g} "
        f"--seed {r['seed']}` ({time.strftime('%Y-%m-%d')}, 2 cores): the echo app (3 "
        f"replicas) under {RATE:.0f} GETs/s through the gateway (a new connection per "
        f"request); a fault about every {every:g} s ({faults}); a canary of a new version "
        "deployed halfway.", "",
        "| what | result | goal |", "|---|---|---|",
        f"| GETs sent | {r['requests']} | |",
        f"| refused | {r['refused']} | 0 |",
        f"| failed otherwise | {r['other']} | 0 |",
        f"| in flight in a proxy at the instant it was SIGKILLed | "
        f"{r['in_flight_at_proxy_kill']} | (lost with its connections) |",
        f"| orphan processes | {len(r['orphans'])} | 0 |",
        f"| duplicate processes | {len(r['duplicates'])} | 0 |",
        f"| `PRAGMA integrity_check` | {r['integrity']} | ok |",
        f"| rollout's final phase | {r['phase']} (releases running: {r['releases']}) | "
        "Promoted |", ""])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--every", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory(prefix="mso-chaos-") as tmp:
        result = run(args.duration, args.every, seed, Path(tmp))
    text = report(result, args.every)
    print(text)
    missed = goals_missed(result)
    for line in missed:
        print(f"GOAL MISSED: {line}", file=sys.stderr)
    if not args.no_write and not missed:
        write_section(SECTION, text)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
