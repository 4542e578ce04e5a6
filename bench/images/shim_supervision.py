"""What the shim's in-container supervision costs (issue 14), with no containers.

Runs `shim.py run` as a container does, over a toy HTTP app on loopback, with a readiness
and a liveness probe every PERIOD, and reports:

* the shim's own CPU while it supervises an idle app (utime+stime from /proc, as a share
  of one core), and its resident memory;
* the wall time of one engine check of its status (`python3 -I -S shim.py probe status`,
  what Docker execs every readiness period on Swarm), side by side with the check the
  Swarm engine ran before (`probe http PORT /ready`, the app probed by the check itself).

    PYTHONPATH=src python bench/images/shim_supervision.py [--seconds 30] [--period 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mso.engines.images import shim
from mso.engines.images.supervision import shim_command

APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _timed(argv: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=False)
        out.append((time.perf_counter() - began) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--checks", type=int, default=30)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    probe = {"http": "/ready", "period": args.period, "timeout": 1.0, "failure_threshold": 3,
             "success_threshold": 1}
    model = {"ports": {"http": port}, "health": {"readiness": probe,
                                                 "liveness": {**probe, "http": "/healthz"}}}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "app.py").write_text(APP)
        status = str(Path(tmp) / "status")
        argv = shim_command(model, [sys.executable, "app.py"], forward=False)
        argv = [sys.executable, shim.__file__, *argv[2:]]
        argv[argv.index("--"):argv.index("--")] = ["--status", status]
        src = str(Path(shim.__file__).resolve().parents[3])
        proc = subprocess.Popen(argv, cwd=tmp, env={**os.environ, "PORT": str(port),
                                                    "PYTHONPATH": src})
        try:
            deadline = time.monotonic() + 30
            check = [sys.executable, "-I", "-S", shim.__file__, "probe", "status", status]
            while subprocess.run(check, capture_output=True).returncode != 0:
                assert time.monotonic() < deadline, "the app never became ready"
                time.sleep(0.1)
            time.sleep(2 * args.period)  # past the start
            cpu0, t0 = _cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
            rss = _rss_mib(proc.pid)
            new = _timed(check, args.checks)
            old = _timed([sys.executable, "-I", "-S", shim.__file__, "probe", "http", str(port),
                          "/ready", "4.5"], args.checks)
        finally:
            proc.terminate()
            proc.wait(30)
    load = os.getloadavg()[0]
    print(f"shim supervising an idle app, 2 http probes every {args.period:g}s, "
          f"{args.seconds:g}s (load {load:.2f}):")
    print(f"  shim CPU {cpu * 100:.2f}% of one core, RSS {rss:.1f} MiB")
    print(f"  Swarm check, median of {args.checks}: status {statistics.median(new):.1f} ms, "
          f"http probe (before) {statistics.median(old):.1f} ms, ratio "
          f"{statistics.median(new) / statistics.median(old):.2f}")


if __name__ == "__main__":
    main()
