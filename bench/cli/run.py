"""How fast the CLI answers (issue 16): `mso ps`, `mso endpoints` and `mso rollout status`
on a running shop, next to `docker ps` and `supervisorctl status` (a supervisord running
the same number of processes) in the same run. Goal: mso's read commands in <= 150 ms.

Each command runs --runs times after one warm-up; the table gives the median and the
95th percentile of wall-clock time, as a user waits for it. Writes the table to
docs/benchmarks.md under "## CLI response time (issue 16)".

Usage: .venv/bin/python bench/cli/run.py [--runs 30] [--no-write]
"""
from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## CLI response time (issue 16)"
MSO = str(Path(sys.executable).with_name("mso"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(argv: list[str], cwd: Path, runs: int) -> list[float]:
    subprocess.run(argv, cwd=cwd, capture_output=True, check=True)  # warm-up
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, cwd=cwd, capture_output=True, check=True)
        out.append(time.perf_counter() - began)
    return out


def supervisord(folder: Path, count: int) -> subprocess.Popen[bytes]:
    conf = folder / "supervisord.conf"
    lines = ["[unix_http_server]", f"file={folder}/s.sock", "", "[supervisord]",
             "nodaemon=true", f"logfile={folder}/s.log", f"pidfile={folder}/s.pid", "",
             "[rpcinterface:supervisor]",
             "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
             "", "[supervisorctl]", f"serverurl=unix://{folder}/s.sock", ""]
    for i in range(count):
        lines += [f"[program:p{i}]", "command=sleep 3600", ""]
    conf.write_text("\n".join(lines))
    proc = subprocess.Popen([str(Path(sys.executable).with_name("supervisord")), "-c",
                             str(conf)], cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ctl = [str(Path(sys.executable).with_name("supervisorctl")), "-c", str(conf), "status"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if subprocess.run(ctl, capture_output=True).stdout.count(b"RUNNING") == count:
            return proc
        time.sleep(0.2)
    raise SystemExit("supervisord did not start its programs")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="mso-bench-cli-") as tmp:
        work = Path(tmp)
        shop = work / "shop"
        shutil.copytree(ROOT / "examples" / "shop", shop,
                        ignore=shutil.ignore_patterns(".mso", "__pycache__"))
        text = (shop / "mso.yaml").read_text()
        (shop / "mso.yaml").write_text(text.replace("port: 8080", f"port: {free_port()}"))
        subprocess.run([MSO, "up", "-d"], cwd=shop, check=True, capture_output=True)
        sup = supervisord(work, 9)  # the shop runs 9 replicas
        try:
            for name, argv in [("mso ps", [MSO, "ps"]), ("mso endpoints", [MSO, "endpoints"]),
                               ("mso rollout status orders",
                                [MSO, "rollout", "status", "orders"]),
                               ("mso ps -o json", [MSO, "ps", "-o", "json"])]:
                rows.append((name, timed(argv, shop, args.runs)))
            ctl = [str(Path(sys.executable).with_name("supervisorctl")), "-c",
                   str(work / "supervisord.conf"), "status"]
            rows.append(("supervisorctl status (9 programs)", timed(ctl, work, args.runs)))
            if shutil.which("docker") and subprocess.run(["docker", "info"],
                                                         capture_output=True).returncode == 0:
                rows.append(("docker ps", timed(["docker", "ps"], work, args.runs)))
        finally:
            sup.terminate()
            sup.wait(30)
            subprocess.run([MSO, "down"], cwd=shop, capture_output=True)
    load = Path("/proc/loadavg").read_text().split()[0]
    lines = [SECTION, "",
             f"`.venv/bin/python bench/cli/run.py --runs {args.runs}` "
             f"({time.strftime('%Y-%m-%d')}, 2 cores, load average {load} at the end; "
             "wall-clock milliseconds per command, the example shop running):", "",
             "| command | median ms | p95 ms |", "|---|---|---|"]
    for name, values in rows:
        values.sort()
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        lines.append(f"| `{name}` | {1000 * statistics.median(values):.0f} | "
                     f"{1000 * p95:.0f} |")
    lines += ["", "Before issue 16's work `mso ps` took ~600 ms, nearly all of it importing "
              "httpx, rich and the pydantic models it does not need; the CLI now talks to the "
              "daemon with the standard library, draws its own tables and imports the models "
              "only for commands that read the manifest.", ""]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        doc = DOCS.read_text()
        start = doc.find(SECTION)
        if start == -1:
            doc = doc.rstrip("\n") + "\n\n" + report
        else:
            nxt = doc.find("\n## ", start + len(SECTION))
            doc = doc[:start] + report + ("\n" + doc[nxt + 1:] if nxt != -1 else "")
        DOCS.write_text(doc)


if __name__ == "__main__":
    main()
