"""Turn the embedded-engine benchmark's measurements into a Markdown section (pure functions)."""
from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import docs_section  # noqa: E402
from common import IdleSample, fmt_ms, fmt_s, median
from killtest import KillSample

SECTION = "## Embedded engine (issue 2)"


@dataclass(frozen=True)
class StartupRow:
    tool: str
    measured: str          # what the figure is
    runs: list[float]
    extra: str = ""        # e.g. the mso event-log span
    stops: list[float] = field(default_factory=list)       # `mso down` / SIGTERM -> all gone
    stop_errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Results:
    services: int
    replicas: int
    startup: list[StartupRow]
    idle: dict[str, dict[str, IdleSample]]   # config -> process group -> sample
    idle_seconds: float
    kills: list[KillSample]
    kill_settings: str
    traffic_ok: int
    traffic_errors: list[str]
    command: str
    machine: str
    minutes: float


KNOWN_ISSUES = [
    "### Problems found by this benchmark, and fixed", "",
    "- `mso down` of the 100-replica app sometimes took 40-60 s or hung: a probe loop could "
    "survive its cancellation (Python 3.11's `asyncio.wait_for` can swallow a cancellation, "
    "CPython gh-86296) and hold up the stop. Fixed in 3c561c2: probe loops end by themselves "
    "once their process exited or a stop began, and probes use `asyncio.timeout`. "
    "Reproducer: `.venv/bin/python bench/local/down_hang.py` (4/4 clean downs after the fix).",
    "- `mso up -d` sometimes failed with `address already in use` on a stable-address listener: "
    "replica ports and stable ports were drawn without avoiding each other. Fixed in 3c561c2: "
    "every port handed out (stable, gateway, metrics, preview, replicas) is avoided.", ""]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 and not math.isnan(a) else "n/a"


def startup_table(rows: Sequence[StartupRow], baseline: str) -> list[str]:
    base = next((median(r.runs) for r in rows if r.tool == baseline), float("nan"))
    lines = ["| tool | start measured as | runs (s) | median | vs " + baseline
             + " | stop, runs (s) | notes |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        runs = ", ".join(f"{v:.2f}" for v in r.runs)
        stops = ", ".join(f"{v:.1f}" for v in r.stops)
        errors = f"; stop FAILED {len(r.stop_errors)}x: {r.stop_errors[0]}" if r.stop_errors else ""
        lines.append(f"| {r.tool} | {r.measured} | {runs} | {fmt_s(median(r.runs))} | "
                     f"{_ratio(median(r.runs), base)} | {stops} | {r.extra}{errors} |")
    return lines


def idle_table(idle: dict[str, dict[str, IdleSample]]) -> list[str]:
    lines = ["| configuration | process | CPU (% of one core) | RSS |", "|---|---|---|---|"]
    for config, groups in idle.items():
        for name, s in groups.items():
            count = f" ({s.pids} processes)" if s.pids > 1 else ""
            lines.append(f"| {config} | {name}{count} | {s.cpu_percent:.2f}% | "
                         f"{s.rss_mib:.1f} MiB |")
    return lines


def kill_table(kills: Sequence[KillSample]) -> list[str]:
    def stat(values: list[float]) -> tuple[str, str]:
        seen = [v for v in values if not math.isnan(v)]
        missing = len(values) - len(seen)
        note = f" ({missing} not seen)" if missing else ""
        return fmt_ms(median(seen)) + note, fmt_ms(max(seen) if seen else float("nan"))

    lines = ["| milestone after SIGKILL | median | max |", "|---|---|---|"]
    for label, values in (
        ("`READY -> BACKOFF` event (out of rotation in the daemon)",
         [k.removed_event for k in kills]),
        ("proxy applied the route table without it", [k.proxy_table for k in kills]),
        ("replacement READY (event log)", [k.replaced_ready for k in kills]),
    ):
        med, mx = stat(values)
        lines.append(f"| {label} | {med} | {mx} |")
    return lines


def render(res: Results) -> str:
    n = res.services * res.replicas
    lines = [SECTION, "",
             f"Reproduce: `{res.command}` (took {res.minutes:.1f} min here; cleans up after itself, "
             f"even on failure). {res.machine}", "",
             f"### Start-up: {res.services} services x {res.replicas} replicas = {n} processes", "",
             "Each process is `bench/local/app.py` (stdlib `http.server` on 127.0.0.1:$PORT, "
             "`GET /ready` -> 200). mso: an HTTP readiness probe per replica "
             "(`timeout: 1s, failure_threshold: 3, success_threshold: 1`), timed from invoking "
             "`mso up -d` until it returns (it returns once every replica is READY; this includes "
             "starting the daemon and the proxy). honcho and supervisord: timed from spawning the "
             "tool until all ports answered 200 on `/ready` to the same poller (a sweep over "
             "pending ports every 10 ms). Medians of the runs listed. Stop: `mso down` until it "
             "returned; honcho/supervisord from SIGTERM until the tool and every child had "
             "exited (capped: the tool gets 30 s, then its process group is SIGKILLed, and its "
             "children get 15 s more before they are SIGKILLed too, so ~45 s means both caps "
             "were hit).", ""]
    lines += startup_table(res.startup, "supervisord")
    lines += ["", "What the tools do: mso starts, health-checks (readiness per replica), restarts "
              "with backoff, and routes traffic through its own proxy to READY replicas only, with "
              "a stable address per service. supervisord starts and restarts processes but does "
              "not health-check them or route traffic (it calls a process RUNNING after "
              "`startsecs`, default 1 s, whether it serves or not). honcho only starts processes "
              "and stops all of them when one exits: no restarts, no health checks, no proxy.", "",
              f"### Idle control plane with the {n} replicas running", "",
              f"CPU time (utime+stime from /proc/PID/stat) over {res.idle_seconds:.0f} s idle, "
              "as percent of one core, and VmRSS at the end. The replicas themselves are not "
              "counted.", ""]
    lines += idle_table(res.idle)
    lines += ["", "### Replica SIGKILL: out of rotation and replaced", "",
              f"{res.kill_settings} {len(res.kills)} kills, rotating over the replicas, "
              "each after the previous replacement had been up longer than `reset_after`.", ""]
    lines += kill_table(res.kills)
    errs = res.traffic_errors
    lines += ["", f"Traffic through the service's stable address during all kills: "
              f"{res.traffic_ok} requests answered 200, {len(errs)} errors"
              + (": " + "; ".join(errs[:5]) if errs else "") + ".", ""]
    lines += KNOWN_ISSUES
    return "\n".join(lines)


def replace_section(text: str, report: str) -> str:
    """`text` with the section `SECTION` replaced by (or appended as) `report`."""
    return docs_section.replace_section(text, SECTION, report)
