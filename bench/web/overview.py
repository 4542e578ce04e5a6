"""Issue 16's dashboard figure: the overview page of an app with 100 replicas.

Starts an app of 10 services x 10 replicas (tiny HTTP servers with 1 s readiness probes)
on the embedded engine, logs in to `mso dashboard` as a browser does, and times GET / (the
overview, server-rendered) `--runs` times, beside `mso ps` of the same app (the CLI's
view of the same data) in the same run. Goal: the overview renders in under 300 ms.

Usage: .venv/bin/python bench/web/overview.py [--replicas 100] [--runs 30] [--no-write]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.docs_section import write_section  # noqa: E402

from tests.e2e.dashboard import base_of, dashboard_url  # noqa: E402
from tests.e2e.harness import ECHO, MsoApp, wait_for  # noqa: E402

SECTION = "## Dashboard overview (issue 16)"


def manifest(services: int, replicas: int) -> str:
    lines = ["app: board", "gateway: {port: GATEWAY_PORT}", "routes:",
             "  - {path: /, service: s00}", "services:"]
    for i in range(services):
        lines += [f"  s{i:02d}:", f"    run: [{sys.executable}, {ECHO}]",
                  f"    replicas: {replicas}", "    ports: {http: 8000}",
                  "    health:", "      readiness: {http: /ready, period: 1s, timeout: 1s}"]
    return "\n".join(lines) + "\n"


def timed(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1000)
    return sorted(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    services = 10
    per = max(1, args.replicas // services)
    with tempfile.TemporaryDirectory(prefix="mso-bench-web-") as tmp:
        folder = Path(tmp) / "app"
        folder.mkdir()
        app = MsoApp(folder)
        try:
            app.write(manifest(services, per))
            app.up(timeout=300)
            wait_for(lambda: app.all_ready(services * per), timeout=300,
                     message="every replica READY")
            url = dashboard_url(app)
            client = httpx.Client(base_url=base_of(url), timeout=30.0)
            assert client.get(url.replace(base_of(url), "")).status_code == 303

            def overview() -> None:
                r = client.get("/")
                assert r.status_code == 200 and "s09" in r.text, r.status_code

            overview()
            page = timed(overview, args.runs)
            ps = timed(lambda: subprocess.run([sys.executable, "-m", "mso", "ps"], cwd=folder,
                                              capture_output=True, check=True),
                       max(5, args.runs // 3))
            size = len(client.get("/").content)
        finally:
            app.teardown()

    def p95(v: list[float]) -> float:
        return v[min(len(v) - 1, int(len(v) * 0.95))]

    load = open("/proc/loadavg").read().split()[0]
    lines = [SECTION, "",
             f"`.venv/bin/python bench/web/overview.py --replicas {services * per} --runs "
             f"{args.runs}` ({time.strftime('%Y-%m-%d')}, 2 cores, load average {load}): "
             f"{services} services x {per} replicas, every one READY; the overview page "
             f"(server-rendered HTML, {size // 1024} KiB) fetched with the session cookie, "
             "beside `mso ps` of the same app (a new CLI process each time).", "",
             "| what | median ms | p95 ms | goal |", "|---|---|---|---|",
             f"| dashboard overview, GET / | {statistics.median(page):.0f} | {p95(page):.0f} | "
             "< 300 |",
             f"| `mso ps` | {statistics.median(ps):.0f} | {p95(ps):.0f} | |", ""]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section(SECTION, report)


if __name__ == "__main__":
    main()
