"""Issue 15 part 1's figures: `kill -9` of the data plane under 200 requests/s.

The echo app (2 replicas) runs on the embedded engine; a paced client sends 200 GETs/s
through the gateway (4 threads) and the proxy process is SIGKILLed `--kills` times, a
second apart. Side by side, in the same run and in front of the same two replicas,
HAProxy under a restart-always supervisor (what `Restart=always` without socket
activation, or supervisord, gives) is killed the same way.

For each it reports the failed requests, split into *refused* (no listener: the
supervisor's restart gap) and *lost in flight* (requests the killed process was serving:
their connections die with it, whatever supervises it), and per kill the time from the
kill to the first answered request that was sent after it. Two client modes: a new
connection per request, and keep-alive connections (each one the killed process held
fails once).

Usage: .venv/bin/python bench/failures/proxy_kill.py [--kills 3] [--no-write]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.docs_section import write_section  # noqa: E402

from tests.e2e.harness import MsoApp, free_port, wait_for  # noqa: E402
from tests.e2e.test_local_engine import echo_app  # noqa: E402

SECTION = "## Data plane failover (issue 15)"
RATE = 200.0
THREADS = 4


@dataclass
class Trace:
    """(start, end, error or None) of every request, monotonic seconds."""

    requests: list[tuple[float, float, str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def load(port: int, keepalive: bool, stop: threading.Event, trace: Trace,
         host: str = "127.0.0.1") -> None:
    interval = THREADS / RATE
    conn: http.client.HTTPConnection | None = None
    next_at = time.monotonic()
    while not stop.is_set():
        if conn is None:
            conn = http.client.HTTPConnection(host, port, timeout=10)
        start = time.monotonic()
        error: str | None = None
        try:
            conn.request("GET", "/", headers={} if keepalive else {"Connection": "close"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                error = f"HTTP {response.status}"
            if response.will_close:
                conn.close()
                conn = None
        except Exception as exc:
            error = type(exc).__name__
            conn.close()
            conn = None
        with trace.lock:
            trace.requests.append((start, time.monotonic(), error))
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        else:
            next_at = time.monotonic()


@dataclass
class Outcome:
    total: int
    refused: int
    in_flight: int
    stale: int
    other: int
    back_ms: list[float]


def analyse(trace: Trace, kills: list[float]) -> Outcome:
    refused = in_flight = stale = other = 0
    for start, end, error in trace.requests:
        if error is None:
            continue
        if "Refused" in error:
            refused += 1
        elif any(start <= k <= end for k in kills):
            in_flight += 1
        elif any(k < start < k + 1.0 for k in kills) and ("Disconnected" in error
                                                          or "Reset" in error):
            stale += 1  # the first request on a keep-alive connection the killed one held
        else:
            other += 1
    back = []
    for k in kills:
        after = [end for start, end, error in trace.requests if start > k and error is None]
        back.append((min(after) - k) * 1000 if after else float("nan"))
    return Outcome(len(trace.requests), refused, in_flight, stale, other, back)


def run_load(port: int, keepalive: bool, kill_one: "callable[[], None]",  # type: ignore[valid-type]
             kills: int) -> Outcome:
    trace, stop = Trace(), threading.Event()
    threads = [threading.Thread(target=load, args=(port, keepalive, stop, trace))
               for _ in range(THREADS)]
    for t in threads:
        t.start()
    times: list[float] = []
    try:
        time.sleep(1.0)
        for _ in range(kills):
            times.append(time.monotonic())
            kill_one()
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return analyse(trace, times)


# --- mso -------------------------------------------------------------------------------
def meta_pid(app: MsoApp, key: str) -> int | None:
    db = sqlite3.connect(app.folder / ".mso" / "state.db")
    try:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return int(json.loads(row[0])["pid"]) if row else None


def mso_kill(app: MsoApp) -> None:
    wait_for(lambda: meta_pid(app, "proxy_spare"), message="a spare proxy")
    pid = meta_pid(app, "proxy_process")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: meta_pid(app, "proxy_process") != pid, message="a new proxy")


# --- HAProxy under a restart-always supervisor ------------------------------------------
HAPROXY_CFG = """
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend gw
    bind 127.0.0.1:{port}
    default_backend echo
backend echo
    balance roundrobin
{servers}
"""


class Supervised:
    """Restarts haproxy the moment it exits (no socket hand-over)."""

    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        while not self.stopping:
            self.proc = subprocess.Popen(["haproxy", "-db", "-f", str(self.cfg)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.ready.set()
            self.proc.wait()

    def kill(self) -> None:
        assert self.proc is not None
        old = self.proc
        old.kill()
        wait_for(lambda: self.proc is not old, interval=0.001, message="haproxy restarted")

    def stop(self) -> None:
        self.stopping = True
        if self.proc is not None:
            self.proc.kill()
        self.thread.join(5)


def fmt(o: Outcome) -> tuple[str, str]:
    failed = (f"{o.refused + o.in_flight + o.stale + o.other} of {o.total} "
              f"({o.refused} refused, {o.in_flight} in flight"
              + (f", {o.stale} on a dead keep-alive connection" if o.stale else "")
              + (f", {o.other} other" if o.other else "") + ")")
    back = ", ".join(f"{b:.0f}" for b in o.back_ms)
    return failed, back


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str, Outcome]] = []
    restarts: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mso-bench-kill-") as tmp:
        folder = Path(tmp) / "app"
        folder.mkdir()
        app = MsoApp(folder)
        try:
            echo_app(app, replicas=2)
            for keepalive in (False, True):
                mode = "keep-alive" if keepalive else "new connection per request"
                rows.append(("mso (spare proxy, sockets held)", mode,
                             run_load(app.gateway_port, keepalive, lambda: mso_kill(app),
                                      args.kills)))
            restarts = [str(e["message"]) for e in app.events()
                        if e["type"] == "proxy.restarted"]
            servers = "\n".join(f"    server s{i} {r['address']}"
                                for i, r in enumerate(app.replicas("echo")))
            port = free_port()
            cfg = Path(tmp) / "haproxy.cfg"
            cfg.write_text(HAPROXY_CFG.format(port=port, servers=servers))
            haproxy = Supervised(cfg)
            try:
                wait_for(lambda: app.get("/", port=port)[0] == 200, message="haproxy")
                for keepalive in (False, True):
                    mode = "keep-alive" if keepalive else "new connection per request"
                    rows.append(("HAProxy, restart-always supervisor", mode,
                                 run_load(port, keepalive, haproxy.kill, args.kills)))
            finally:
                haproxy.stop()
        finally:
            app.teardown()
    took = [float(m.split(" in ")[-1].split()[0]) for m in restarts if " in " in m]
    lines = [SECTION, "",
             f"`.venv/bin/python bench/failures/proxy_kill.py --kills {args.kills}` "
             f"({time.strftime('%Y-%m-%d')}, 2 cores): the echo app (2 replicas), {RATE:.0f} "
             f"GETs/s through the gateway from {THREADS} threads; the serving proxy "
             f"SIGKILLed {args.kills} times a second apart; HAProxy 2.6 under a "
             "restart-always supervisor in front of the same replicas, killed the same way.",
             "", "| data plane | client | failed requests | first answer after each kill (ms) |",
             "|---|---|---|---|"]
    for name, mode, outcome in rows:
        failed, back = fmt(outcome)
        lines.append(f"| {name} | {mode} | {failed} | {back} |")
    if took:
        lines += ["", f"mso's own figure (`proxy.restarted` events), kill to the spare "
                  f"serving with the sockets and table: median {statistics.median(took):.0f} "
                  f"ms (max {max(took):.0f})."]
    lines += ["", "*Refused* connections are the supervisor's gap with no listener; mso has "
              "none because the daemon holds the listening sockets. Requests *in flight* in "
              "the killed process die with its connections under any supervisor (HAProxy "
              "too): a new connection per request loses only those being served at the "
              "instant of the kill, keep-alive clients also lose each connection the "
              "process held (a client that retries an idempotent request on a stale "
              "keep-alive connection, as browsers do, does not see it).", ""]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section(SECTION, report)


if __name__ == "__main__":
    main()
