"""Autoscaling benchmark (issue 19 item 1): a load step on an autoscaled service.

The service (bench/autoscale/app.py) does ~10 ms of work per request, one request at a
time per replica: about 100 req/s per replica. Open-loop load (bench/autoscale/openloop.py)
steps from --low to --high req/s and back. Measured through the real CLI/API of the
local engine:

  * time from the step until the load is met (every 1 s bucket of the next 5 s answered
    at >= 95% of the offered rate with a p99 under 100 ms), and until the replicas the
    autoscaler settled on were READY;
  * the replica count over --steady seconds of steady load (changes = flapping);
  * after the step down, time until the service is back to `min` (and that minus the
    configured scale-down window);
  * failed requests over the whole run (goal 0).

    PYTHONPATH=src .venv/bin/python bench/autoscale/run.py [--low 20] [--high 400]
        [--steady 120] [--window 30] [--no-write] [--json out.json]

Takes about 4 minutes with the defaults. The machine's load (uptime) is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "rollouts"))

from docs_section import write_section  # noqa: E402
from driver import App, wait_for  # noqa: E402
from openloop import Done, OpenLoop  # noqa: E402

HEADING = "## Autoscaling (issue 19)"
PYTHON = os.path.realpath(sys.executable)


def manifest(port: int, args: argparse.Namespace) -> str:
    return f"""app: bench-autoscale
gateway: {{bind: 127.0.0.1, port: {port}}}
routes: [{{path: /, service: work}}]
services:
  work:
    run: [{PYTHON}, {HERE / "app.py"}]
    env: {{WORK_MS: "{args.work_ms:g}"}}
    ports: {{http: 8000}}
    health:
      readiness: {{http: /ready, period: 200ms, timeout: 1s, failure_threshold: 1}}
    stop: {{grace: 10s}}
    autoscale:
      min: {args.min}
      max: {args.max}
      target_rps_per_replica: {args.target_rps:g}
      target_inflight_per_replica: {args.target_inflight:g}
      behavior:
        scale_up: {{max_step: {args.up_step}}}
        scale_down: {{stabilization: {args.window:g}s}}
"""


@dataclass
class Result:
    low: float
    high: float
    load_before: str
    load_after: str = ""
    met_after: float | None = None
    ready_after: float | None = None
    settled_replicas: int = 0
    peak_replicas: int = 0
    steady_seconds: float = 0.0
    steady_counts: list[int] = field(default_factory=list)
    steady_changes: int = 0
    steady_p50_ms: float = 0.0
    steady_p99_ms: float = 0.0
    back_to_min_after: float | None = None
    window: float = 0.0
    requests: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)


class Sampler:
    """(monotonic time, READY replicas, replicas not draining, all replicas) every 0.5 s."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.rows: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reps = [r for r in self.app.api("/v1/ps")["replicas"] if r["service"] == "work"]
                live = [r for r in reps if not r["draining"]]
                self.rows.append((time.monotonic(), sum(r["state"] == "READY" for r in live),
                                  len(live), len(reps)))
            except Exception:  # the API busy for a moment: next sample
                pass
            self._stop.wait(0.5)


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def p(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def met_at(done: list[Done], start: float, rate: float, hold: float = 5.0) -> float | None:
    """First second after `start` from which every 1 s bucket (by scheduled time) of the
    next `hold` seconds was answered at >= 95% of `rate`, with a p99 under 100 ms."""
    buckets: dict[int, list[float]] = {}
    for d in done:
        if d.scheduled >= start and d.ok:
            buckets.setdefault(int(d.scheduled - start), []).append(d.finished - d.scheduled)
    last = max(buckets, default=-1)
    for second in range(0, last - int(hold) + 1):
        window = [buckets.get(second + k, []) for k in range(int(hold))]
        if all(len(b) >= 0.95 * rate and p(b, 0.99) < 0.1 for b in window):
            return float(second)
    return None


def run(args: argparse.Namespace, folder: Path) -> Result:
    result = Result(args.low, args.high, uptime(), window=args.window)
    with App(folder) as app:
        app.write(manifest(app.gateway_port, args))
        app.up()
        with Sampler(app) as sampler, OpenLoop(app.gateway_port, args.low) as load:
            time.sleep(args.warm)
            step = load.set_rate(args.high)
            wait_for(lambda: met_at(load.snapshot(), step, args.high) is not None,
                     timeout=90, message="the high load to be met", interval=1.0)
            met = step + float(met_at(load.snapshot(), step, args.high) or 0.0)
            # What the step asked for beyond the steady need (the backlog it left) is given
            # back after one scale-down window: the steady figures start after it.
            settled = met + args.window + 10.0
            time.sleep(max(0.0, settled + args.steady - time.monotonic()))
            down = load.set_rate(args.low)
            wait_for(lambda: sampler.rows and sampler.rows[-1][0] > down
                     and sampler.rows[-1][3] == args.min, timeout=args.window + 90,
                     message="back to min", interval=0.5)
            back = sampler.rows[-1][0]
            time.sleep(2)
        done = load.snapshot()
        events = [e for e in app.events() if e["type"] == "service.autoscaled"]
        result.decisions = [e["message"] for e in events]
    result.load_after = uptime()
    result.met_after = round(met - step, 1)
    steady = [r for r in sampler.rows if settled <= r[0] <= down]
    result.peak_replicas = max((r[2] for r in sampler.rows), default=0)
    result.settled_replicas = steady[0][2] if steady else 0
    ready = next((r[0] for r in sampler.rows if r[0] >= step
                  and r[1] >= result.peak_replicas), None)
    result.ready_after = None if ready is None else round(ready - step, 1)
    result.steady_seconds = round(down - settled, 1)
    result.steady_counts = sorted({r[2] for r in steady})
    result.steady_changes = sum(1 for a, b in zip(steady, steady[1:]) if a[2] != b[2])
    latencies = [d.finished - d.scheduled for d in done
                 if settled <= d.scheduled <= down and d.ok]
    result.steady_p50_ms = round(p(latencies, 0.5) * 1000, 1)
    result.steady_p99_ms = round(p(latencies, 0.99) * 1000, 1)
    result.back_to_min_after = round(back - down, 1)
    result.requests = len(done)
    failed = [d for d in done if not d.ok]
    result.failed = len(failed)
    result.failures = sorted({d.error for d in failed})[:5]
    return result


def report(r: Result, args: argparse.Namespace, command: str) -> str:
    back_extra = "" if r.back_to_min_after is None else f"{r.back_to_min_after - r.window:.1f}"
    lines = [
        HEADING, "",
        f"A load step on an autoscaled service of the local engine: {args.low:g} -> "
        f"{args.high:g} req/s, open loop (latency counted from each request's scheduled "
        f"time). The service does {args.work_ms:g} ms of work per request, one request at a "
        f"time per replica (about {1000 / args.work_ms:.0f} req/s per replica; "
        f"`bench/autoscale/app.py`); `autoscale: {{min: {args.min}, max: {args.max}, "
        f"target_rps_per_replica: {args.target_rps:g}, target_inflight_per_replica: "
        f"{args.target_inflight:g}, behavior: {{scale_up: {{max_step: {args.up_step}}}, "
        f"scale_down: {{stabilization: {args.window:g}s}}}}}}`.", "",
        f"Reproduce: `{command}`", "",
        "| figure | value | goal |", "|---|---|---|",
        f"| step to load met (5 s at >= 95% of the rate, p99 < 100 ms) | {r.met_after} s | <= 15 s |",
        f"| step to the replicas asked for ({r.peak_replicas}) READY | {r.ready_after} s | |",
        f"| replicas during {r.steady_seconds:g} s of steady load, from one scale-down "
        f"window after the load was met | {r.steady_counts} ({r.steady_changes} changes) "
        f"| no flapping |",
        f"| latency p50 / p99 at steady load | {r.steady_p50_ms} / {r.steady_p99_ms} ms | |",
        f"| step down to back at min ({args.min}) | {r.back_to_min_after} s (window "
        f"{r.window:g} s + {back_extra} s) | window + a few s |",
        f"| failed requests | {r.failed} of {r.requests} | 0 |", "",
        f"Machine: {os.cpu_count()} CPUs, shared; load average (1, 5, 15 min) {r.load_before} "
        f"before, {r.load_after} after. The proxy ran as pure Python (not the mypyc build).", "",
        "The autoscaler's decisions (`service.autoscaled` events). The step leaves a "
        "backlog (open-loop requests keep arriving while the first replicas start), which "
        "the in-flight target sees: the first decision asks for more than the steady load "
        "needs, and the extra replicas are given back after one scale-down window, before "
        "the steady figures are taken:", "",
        *[f"- {d}" for d in r.decisions], "",
        "Kubernetes' HPA with its documented defaults, for comparison (not run here): it "
        "looks at its metrics every 15 s (`--horizontal-pod-autoscaler-sync-period`), on "
        "figures that metrics-server scrapes every 15 s at best (and a custom req/s metric "
        "needs a Prometheus adapter on top), so a step is noticed after 15-30 s plus the "
        "pods' start; scale-up may add max(4 pods, 100%) per 15 s; scale-down waits a "
        "300 s stabilization window. mso uses the same algorithm and defaults for the "
        "decision, but its figures come from the proxy every second over a 3 s window, so "
        "the step is seen within 1-2 s; the 5 min scale-down default is kept (shortened "
        "here by the manifest).", "",
        "Lesson: `target_rps_per_replica` alone under-reads a saturated service (a replica "
        "that serves 100 req/s is offered 400 but is *sent* little more than it answers "
        "once the clients wait), so it climbs a replica per decision: measured once with the "
        "in-flight target out of play (`--target-inflight 100000 --steady 10 --window 10`, "
        "load 2.9-4.5), the same step was met after 70 s (1 -> 2 -> 3 -> ... -> 8 -> 10 "
        "replicas, one decision each). `target_inflight_per_replica` sees the queue and "
        "asks for enough at once.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--low", type=float, default=20.0)
    parser.add_argument("--high", type=float, default=400.0)
    parser.add_argument("--warm", type=float, default=10.0, help="seconds at --low first")
    parser.add_argument("--steady", type=float, default=120.0)
    parser.add_argument("--window", type=float, default=30.0,
                        help="the scale-down stabilization window (s)")
    parser.add_argument("--work-ms", type=float, default=10.0)
    parser.add_argument("--min", type=int, default=1)
    parser.add_argument("--max", type=int, default=10)
    parser.add_argument("--target-rps", type=float, default=80.0)
    parser.add_argument("--target-inflight", type=float, default=4.0)
    parser.add_argument("--up-step", default="10", help="behavior.scale_up.max_step (per "
                        "15 s; HPA's default is max(4, 100%%))")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    command = "PYTHONPATH=src .venv/bin/python bench/autoscale/run.py"
    for name in ("low", "high", "steady", "window", "up_step"):
        if getattr(args, name) != parser.get_default(name):
            command += f" --{name.replace('_', '-')} {getattr(args, name)}"
    with tempfile.TemporaryDirectory(prefix="mso-bench-autoscale-") as tmp:
        result = run(args, Path(tmp) / "app")
    text = report(result, args, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    if not args.no_write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
