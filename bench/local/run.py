"""Embedded-engine benchmark: start-up time, idle control-plane cost and SIGKILL recovery of
mso's local engine, next to honcho and supervisord running the same processes.

Prints the tables and writes them to docs/benchmarks.md under "## Embedded engine (issue 2)",
replacing only that section.  Everything runs on 127.0.0.1 and is torn down even on failure.

Usage: .venv/bin/python bench/local/run.py [--runs 3] [--kills 10] [--idle 30] [--no-write]
       (--quick: a tiny smoke run that never writes)
"""
from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import IdleSample, children_of, free_ports, sample_idle, wait_all_200  # noqa: E402
from killtest import (KillSample, ProxyWatcher, Traffic, kill_loop,  # noqa: E402
                      samples_from_events)
from common import median  # noqa: E402
from msoapp import (MsoError, MsoRun, manifest_text, new_gateway_port,  # noqa: E402
                    ready_bounds)
from peers import Honcho, PeerTool, Supervisord  # noqa: E402
from report import Results, StartupRow, render, replace_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
KILL_BACKOFF = "{initial: 100ms, max: 5s, reset_after: 1s}"


@dataclass
class Trial:
    """One start-up run of one tool: how long start and stop took, plus an idle sample."""
    seconds: float
    phases: tuple[float, float, float] | None = None
    idle: dict[str, IdleSample] | None = None
    stop_seconds: float = float("nan")
    stop_error: str | None = None


def mso_startup(work: Path, tag: str, args: argparse.Namespace, period: str,
                idle_seconds: float) -> Trial:
    """One `mso up -d` ... `mso down`.

    The phases, from wall clocks and event timestamps: `mso up` invoked -> daemon started,
    daemon started -> last replica READY, last READY -> `mso up -d` returned.
    """
    text = manifest_text(app=f"bench-{tag}", services=args.services, replicas=args.replicas,
                         period=period, gateway_port=new_gateway_port())
    with MsoRun(work / tag, text) as run:
        trial = Trial(run.up())
        start, last = ready_bounds(run.events())
        trial.phases = (start - run.up_called, last - start, run.up_returned - last)
        if idle_seconds > 0:
            daemon, proxy = run.daemon_pid(), run.proxy_pid()
            trial.idle = sample_idle({"mso daemon": [daemon],
                                      "mso proxy": [proxy, *children_of(proxy)]}, idle_seconds)
    trial.stop_seconds, trial.stop_error = run.down_seconds, run.down_error
    return trial


def mso_with_retries(work: Path, tag: str, args: argparse.Namespace, period: str,
                     idle_seconds: float, failures: list[str], attempts: int = 3) -> Trial:
    """A failed `mso up -d` is recorded (the report shows it) and the trial run again."""
    for attempt in range(attempts):
        try:
            return mso_startup(work, f"{tag}-a{attempt}", args, period, idle_seconds)
        except MsoError as exc:
            failures.append(str(exc).splitlines()[0][:240])
            print(f"  mso up failed (attempt {attempt + 1}): {failures[-1]}", flush=True)
    raise RuntimeError(f"mso up -d failed {attempts} times in a row: {failures[-attempts:]}")


def peer_startup(tool: type[PeerTool], work: Path, tag: str, args: argparse.Namespace,
                 idle_seconds: float) -> Trial:
    ports = free_ports(args.services * args.replicas)
    with tool(work / tag, ports, args.replicas) as peer:
        trial = Trial(wait_all_200(ports, peer.start()))
        if idle_seconds > 0 and peer.proc is not None:
            trial.idle = sample_idle({peer.name: [peer.proc.pid]}, idle_seconds)
    trial.stop_seconds = peer.stop_seconds
    return trial


def startup_bench(work: Path, args: argparse.Namespace
                  ) -> tuple[list[StartupRow], dict[str, dict[str, IdleSample]]]:
    mso_variants = {"mso (period 1s)": "1s", "mso (period 200ms)": "200ms"}
    trials: dict[str, list[Trial]] = {n: [] for n in [*mso_variants, "honcho", "supervisord"]}
    idle: dict[str, dict[str, IdleSample]] = {}
    up_failures: dict[str, list[str]] = {n: [] for n in mso_variants}
    # Interleaved, so slow drift of the shared machine's load spreads over every tool.
    for i in range(args.runs):
        last = i == args.runs - 1
        for name, period in mso_variants.items():
            t = mso_with_retries(work, f"{period}-{i}", args, period, args.idle if last else 0,
                                 up_failures[name])
            trials[name].append(t)
            if t.idle:
                idle[f"mso, readiness period {period}"] = t.idle
            print(f"  {name} run {i + 1}: up -d {t.seconds:.2f} s (phases "
                  + ", ".join(f"{p:.2f}" for p in t.phases or ()) + f"), down "
                  f"{t.stop_seconds:.2f} s {t.stop_error or ''}", flush=True)
        for tool in (Honcho, Supervisord):
            t = peer_startup(tool, work, f"{tool.name}-{i}", args,
                             args.idle if last and tool is Supervisord else 0)
            trials[tool.name].append(t)
            if t.idle:
                idle["supervisord"] = t.idle
            print(f"  {tool.name} run {i + 1}: {t.seconds:.2f} s, stop {t.stop_seconds:.2f} s",
                  flush=True)
    rows = []
    for name, ts in trials.items():
        is_mso = name in mso_variants
        note = phase_note([t.phases for t in ts if t.phases]) if is_mso else "no health checks"
        if up_failures.get(name):
            note += (f"; `mso up -d` FAILED {len(up_failures[name])}x (retried): "
                     f"{up_failures[name][0]}")
        rows.append(StartupRow(name, "`mso up -d` returned" if is_mso else "all ports answer 200",
                               [t.seconds for t in ts], note, [t.stop_seconds for t in ts],
                               [t.stop_error for t in ts if t.stop_error]))
    return rows, idle


def phase_note(phases: list[tuple[float, float, float]]) -> str:
    a, b, c = (median([p[i] for p in phases]) for i in range(3))
    return (f"medians: `mso up` -> daemon started {a:.2f} s, daemon started -> last replica "
            f"READY {b:.2f} s (event log), last READY -> `up -d` returned {c:.2f} s")


def kill_bench(work: Path, args: argparse.Namespace
               ) -> tuple[list[KillSample], Traffic, str]:
    settings = (f"An app of 1 service x 3 replicas; readiness `period: 200ms, timeout: 1s, "
                f"failure_threshold: 3`; `backoff: {KILL_BACKOFF}`.")
    text = manifest_text(app="bench-kill", services=1, replicas=3, period="200ms",
                         gateway_port=new_gateway_port(), backoff=KILL_BACKOFF)
    with MsoRun(work / "kill", text) as run:
        run.up()
        host, port = run.json("endpoints")["services"]["s01"]["address"].rsplit(":", 1)
        failures: list[str] = []
        watcher = ProxyWatcher(run.proxy_control())
        traffic = Traffic(host, int(port), rate=100.0)
        watcher.start()
        traffic.start()
        try:
            kills = kill_loop(run, "s01", args.kills, settle=1.2, failures=failures)
            time.sleep(0.5)  # let requests issued around the last replacement complete
        finally:
            traffic.stop()
            watcher.stop()
        samples = samples_from_events(run.events(), kills, watcher)
        if watcher.error:
            failures.append(f"proxy watcher stopped early: {watcher.error}")
    for s in samples:
        print(f"  kill {s.replica}: event {s.removed_event * 1000:.0f} ms, proxy "
              f"{s.proxy_table * 1000:.0f} ms, replaced READY {s.replaced_ready * 1000:.0f} ms",
              flush=True)
    return samples, traffic, settings + "".join(f" FAILURE: {f}" for f in failures)


def mso_commit() -> str:
    """The commit measured, marked when src/ had uncommitted changes (others edit it live)."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = " + uncommitted src/ changes" if git("status", "--porcelain", "--", "src").strip() \
        else ""
    return f"mso at {git('rev-parse', '--short', 'HEAD').strip()}{dirty}"


def machine_note(load_at_start: float, commit: str) -> str:
    return (f"{commit}. Measured on {os.cpu_count()} cores, Python {sys.version.split()[0]}; 1-minute load "
            f"average {load_at_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end "
            "(a shared machine: other builds and tests ran at the same time, so absolute "
            "figures are pessimistic; the tools ran interleaved, so ratios are fairer).")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--idle", type=float, default=30.0, help="idle sampling window, seconds")
    p.add_argument("--services", type=int, default=20)
    p.add_argument("--replicas", type=int, default=5)
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--quick", action="store_true", help="tiny smoke run; implies --no-write")
    args = p.parse_args()
    if args.quick:
        args.runs, args.kills, args.idle, args.services, args.replicas = 1, 2, 2.0, 3, 2
        args.no_write = True
    return args


def main() -> None:
    args = parse_args()
    command = ".venv/bin/python bench/local/run.py" + "".join(
        f" {shlex.quote(a)}" for a in sys.argv[1:])
    load_at_start, commit = os.getloadavg()[0], mso_commit()
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mso-bench-local-") as tmp:
        work = Path(tmp)
        print("start-up and idle:", flush=True)
        rows, idle = startup_bench(work, args)
        print("SIGKILL recovery:", flush=True)
        kills, traffic, settings = kill_bench(work, args)
    report = render(Results(services=args.services, replicas=args.replicas, startup=rows,
                            idle=idle, idle_seconds=args.idle, kills=kills,
                            kill_settings=settings, traffic_ok=traffic.result.ok,
                            traffic_errors=traffic.result.errors, command=command,
                            machine=machine_note(load_at_start, commit), minutes=(time.monotonic() - began) / 60))
    print()
    print(report)
    if not args.no_write:
        path = ROOT / "docs" / "benchmarks.md"
        # Re-read right before writing: other sections are written by others.
        text = path.read_text() if path.exists() else "# Benchmarks\n"
        path.write_text(replace_section(text, report))
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
