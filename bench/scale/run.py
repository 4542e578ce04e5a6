"""Scale benchmark of the embedded engine (issue 15, part 6): N tiny replicas of one
service, each with an HTTP readiness probe every second, for N in --replicas.

For each N it measures, through the real CLI:
  * `mso up -d` until every replica is READY (the command's own wall time, and from the
    daemon's start event to the last replica's first READY event),
  * idle CPU of the daemon and of the proxy (percent of one core, over --idle seconds),
  * RSS and PSS of the daemon and of the proxy (the active one; the spare is listed too),
  * `mso ps` wall time (median of --ps-runs), and `mso down`.
and the same N processes under supervisord (no health checks: it has none) as a baseline:
time until every port answers, idle CPU and memory of supervisord, `supervisorctl status`.

Usage: PYTHONPATH=src .venv/bin/python bench/scale/run.py --replicas 10,100,1000
       [--idle 30] [--ps-runs 5] [--period 1s] [--no-peer] [--json out.json]
The machine's load (uptime) is printed next to the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "local"))

from common import children_of, cpu_seconds, free_ports, rss_kib, wait_all_200  # noqa: E402
from msoapp import MSO, MsoRun, new_gateway_port, ready_span  # noqa: E402
from peers import PeerTool  # noqa: E402

TINY = HERE / "tiny.py"
# The interpreter behind the venv (a venv's python is a symlink; -I ignores the venv anyway).
PYTHON = os.path.realpath(sys.executable)


def manifest(n: int, period: str, gateway_port: int) -> str:
    return "\n".join([
        f"app: scale{n}", f"gateway: {{bind: 127.0.0.1, port: {gateway_port}}}", "routes:",
        "  - {path: /, service: tiny}", "services:", "  tiny:",
        f"    run: [{PYTHON}, -S, -I, {TINY}]", f"    replicas: {n}",
        "    ports: {http: 8000}", "    health:",
        f"      readiness: {{http: /ready, period: {period}, timeout: 1s, "
        "failure_threshold: 3, success_threshold: 1}", ""])


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def idle_cpu(groups: dict[str, list[int]], seconds: float) -> dict[str, float]:
    def total(pids: list[int]) -> float:
        out = 0.0
        for p in pids:
            try:
                out += cpu_seconds(p)
            except OSError:
                pass
        return out
    before = {k: total(v) for k, v in groups.items()}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {k: 100.0 * (total(v) - before[k]) / elapsed for k, v in groups.items()}


def timed(argv: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       stdin=subprocess.DEVNULL, env=env, timeout=120)
        out.append(time.monotonic() - t0)
    return out


@dataclass
class Row:
    tool: str
    replicas: int
    up_s: float = float("nan")
    ready_span_s: float = float("nan")
    #: CPU seconds the daemon used from its start until the sample (mostly the start-up).
    start_cpu_s: float = float("nan")
    cpu: dict[str, float] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    pss_mib: dict[str, float] = field(default_factory=dict)
    ps_s: float = float("nan")
    down_s: float = float("nan")
    replicas_pss_mib: float = float("nan")
    load_before: str = ""
    load_after: str = ""
    error: str = ""


def mso_row(work: Path, n: int, args: argparse.Namespace) -> Row:
    row = Row("mso", n, load_before=load())
    with MsoRun(work / f"mso{n}", manifest(n, args.period, new_gateway_port())) as run:
        row.up_s = run.up(timeout=args.up_timeout)
        row.ready_span_s = ready_span(run.events())
        daemon, proxy = run.daemon_pid(), run.proxy_pid()
        row.start_cpu_s = cpu_seconds(daemon)
        time.sleep(args.settle)
        kids = children_of(daemon)
        spares = [p for p in kids if p != proxy and "mso.proxy" in cmdline(p)]
        proxies = [proxy, *children_of(proxy)]
        replicas = [p for p in kids if str(TINY) in cmdline(p)]
        groups = {"daemon": [daemon], "proxy": proxies, "spare proxy": spares}
        row.cpu = idle_cpu(groups, args.idle)
        row.rss_mib = {k: sum(rss_kib(p) for p in v) / 1024 for k, v in groups.items()}
        row.pss_mib = {k: sum(pss_kib(p) for p in v) / 1024 for k, v in groups.items()}
        row.replicas_pss_mib = sum(pss_kib(p) for p in replicas) / 1024
        if args.ps_runs:
            row.ps_s = statistics.median(timed(
                [MSO, "ps", "--file", str(run.folder / "mso.yaml")], args.ps_runs))
        row.load_after = load()
    row.down_s = run.down_seconds
    if run.down_error:
        row.error = run.down_error
    return row


class Supervisord(PeerTool):
    name = "supervisord"

    def command(self) -> list[str]:
        f = self.folder
        lines = ["[unix_http_server]", f"file={f}/supervisor.sock", "", "[supervisord]",
                 "nodaemon=true", f"logfile={f}/supervisord.log", f"pidfile={f}/sd.pid",
                 f"childlogdir={f}", "loglevel=warn", "minfds=20000", "",
                 "[rpcinterface:supervisor]",
                 "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                 "", "[supervisorctl]", f"serverurl=unix://{f}/supervisor.sock", ""]
        for i, port in enumerate(self.ports):
            lines += [f"[program:r{i}]", f"command={PYTHON} -S -I {TINY}",
                      f'environment=PORT="{port}"', "autorestart=true", "startsecs=0",
                      f"stdout_logfile={f}/r{i}.log", "redirect_stderr=true", ""]
        (f / "supervisord.conf").write_text("\n".join(lines))
        return [str(Path(sys.executable).parent / "supervisord"), "-n", "-c",
                str(f / "supervisord.conf")]


def supervisord_row(work: Path, n: int, args: argparse.Namespace) -> Row:
    row = Row("supervisord", n, load_before=load())
    ports = free_ports(n)
    with Supervisord(work / f"sd{n}", ports, n) as sd:
        started = sd.start()
        row.up_s = wait_all_200(ports, started, timeout=args.up_timeout)
        assert sd.proc is not None
        row.start_cpu_s = cpu_seconds(sd.proc.pid)
        time.sleep(args.settle)
        groups = {"daemon": [sd.proc.pid]}
        row.cpu = idle_cpu(groups, args.idle)
        row.rss_mib = {"daemon": rss_kib(sd.proc.pid) / 1024}
        row.pss_mib = {"daemon": pss_kib(sd.proc.pid) / 1024}
        row.replicas_pss_mib = sum(pss_kib(p) for p in children_of(sd.proc.pid)) / 1024
        if args.ps_runs:
            ctl = str(Path(sys.executable).parent / "supervisorctl")
            times = []
            for _ in range(args.ps_runs):  # exits 3 when a program is not RUNNING
                t0 = time.monotonic()
                subprocess.run([ctl, "-c", str(sd.folder / "supervisord.conf"), "status"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, timeout=120)
                times.append(time.monotonic() - t0)
            row.ps_s = statistics.median(times)
        row.load_after = load()
    row.down_s = sd.stop_seconds
    return row


def fmt(v: float, unit: str = "", digits: int = 2) -> str:
    return "n/a" if v != v else f"{v:.{digits}f}{unit}"


def table(rows: list[Row]) -> str:
    out = ["| tool | replicas | up until all READY | daemon CPU for the start-up | "
           "daemon CPU idle | proxy CPU idle | "
           "daemon RSS / PSS | proxy RSS / PSS | spare proxy PSS | `ps` | down | "
           "replicas' PSS | load before / after |", "|" + "---|" * 13]
    for r in rows:
        ready = fmt(r.up_s, " s") + (f" ({fmt(r.ready_span_s, ' s')} start->last READY)"
                                     if r.ready_span_s == r.ready_span_s else "")
        out.append(
            f"| {r.tool} | {r.replicas} | {ready} | {fmt(r.start_cpu_s, ' s')} | "
            f"{fmt(r.cpu.get('daemon', float('nan')), '%')} | "
            f"{fmt(r.cpu.get('proxy', float('nan')), '%')} | "
            f"{fmt(r.rss_mib.get('daemon', float('nan')), '', 0)} / "
            f"{fmt(r.pss_mib.get('daemon', float('nan')), ' MiB', 0)} | "
            f"{fmt(r.rss_mib.get('proxy', float('nan')), '', 0)} / "
            f"{fmt(r.pss_mib.get('proxy', float('nan')), ' MiB', 0)} | "
            f"{fmt(r.pss_mib.get('spare proxy', float('nan')), ' MiB', 0)} | "
            f"{fmt(r.ps_s * 1000, ' ms', 0)} | {fmt(r.down_s, ' s')} | "
            f"{fmt(r.replicas_pss_mib, ' MiB', 0)} | {r.load_before} / {r.load_after} |")
    return "\n".join(out)


def ratios(rows: list[Row]) -> str:
    """How each mso figure grows from the smallest N to each larger one."""
    mso = sorted((r for r in rows if r.tool == "mso"), key=lambda r: r.replicas)
    if len(mso) < 2:
        return ""
    base = mso[0]
    out = [f"growth relative to {base.replicas} replicas (x{''}):"]
    for r in mso[1:]:
        def ratio(a: float, b: float) -> str:
            return "n/a" if not b or a != a or b != b else f"{a / b:.1f}x"
        out.append(f"  {r.replicas} replicas ({r.replicas / base.replicas:.0f}x): up "
                   f"{ratio(r.up_s, base.up_s)}, daemon CPU "
                   f"{ratio(r.cpu['daemon'], base.cpu['daemon'])}, daemon PSS "
                   f"{ratio(r.pss_mib['daemon'], base.pss_mib['daemon'])}, proxy PSS "
                   f"{ratio(r.pss_mib['proxy'], base.pss_mib['proxy'])}, ps "
                   f"{ratio(r.ps_s, base.ps_s)}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--replicas", default="10,100,1000")
    ap.add_argument("--idle", type=float, default=30.0, help="idle sampling window (s)")
    ap.add_argument("--settle", type=float, default=5.0, help="wait before sampling (s)")
    ap.add_argument("--ps-runs", type=int, default=5)
    ap.add_argument("--period", default="1s")
    ap.add_argument("--up-timeout", type=float, default=600.0)
    ap.add_argument("--no-peer", action="store_true", help="skip supervisord")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    counts = [int(x) for x in args.replicas.split(",") if x]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mso-scale-") as tmp:
        for n in counts:
            print(f"-- {n} replicas: mso (load {load()})", flush=True)
            try:
                rows.append(mso_row(Path(tmp), n, args))
            except Exception as exc:
                rows.append(Row("mso", n, error=str(exc)[:300]))
            print(table(rows[-1:]), flush=True)
            if not args.no_peer:
                print(f"-- {n} replicas: supervisord (load {load()})", flush=True)
                try:
                    rows.append(supervisord_row(Path(tmp), n, args))
                except Exception as exc:
                    rows.append(Row("supervisord", n, error=str(exc)[:300]))
                print(table(rows[-1:]), flush=True)
    print()
    print(table(rows))
    for r in rows:
        if r.error:
            print(f"error ({r.tool}, {r.replicas}): {r.error}")
    print(ratios(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
