"""Scale to zero benchmark (issue 19 item 2): the first requests to a service at 0 replicas.

A small Python HTTP service (bench/autoscale/app.py with no work per request; readiness
`/ready` every 100 ms) with `autoscale: {min: 0, max: 3, target_rps_per_replica: 50,
idle: 2s}` on the local engine, through the real CLI, daemon and proxy. Repeated
--rounds times, each after the service went back to zero (idle):

  * one request: its latency from zero (goal under 1 s);
  * --burst requests at once (default 50): how many are answered 200 (goal: all), their
    latency p50 and max.

Side by side in the same run: the same requests with one replica already READY (the
floor), and a second app without `autoscale` scaled to 0 by `mso scale work=0`, where
the proxy has nothing to hold requests for (what the hold saves).

    PYTHONPATH=src .venv/bin/python bench/autoscale/zero.py [--rounds 5] [--burst 50]
        [--no-write] [--json out.json]

Takes about a minute. The machine's load (uptime) is printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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

HEADING = "## Scale to zero (issue 19)"
PYTHON = os.path.realpath(sys.executable)


def manifest(app: str, port: int, autoscale: bool) -> str:
    text = f"""app: {app}
gateway: {{bind: 127.0.0.1, port: {port}}}
routes: [{{path: /, service: work}}]
services:
  work:
    run: [{PYTHON}, {HERE / "app.py"}]
    env: {{WORK_MS: "0"}}
    ports: {{http: 8000}}
    health:
      readiness: {{http: /ready, period: 100ms, timeout: 1s}}
    stop: {{grace: 5s}}
"""
    if autoscale:
        text += ("    autoscale: {min: 0, max: 3, target_rps_per_replica: 50, idle: 2s,\n"
                 "                hold: {queue: 100, timeout: 30s}}\n")
    return text


def request(port: int) -> tuple[int | str, float]:
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - began
    except OSError as exc:
        return type(exc).__name__, time.monotonic() - began
    finally:
        conn.close()


def burst(port: int, n: int) -> list[tuple[int | str, float]]:
    out: list[tuple[int | str, float]] = []
    gate = threading.Barrier(n)

    def one() -> None:
        gate.wait()
        out.append(request(port))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    return out


def replicas(app: App) -> list[dict[str, object]]:
    return [r for r in app.api("/v1/ps")["replicas"] if r["service"] == "work"]


def at_zero(app: App) -> bool:
    return not replicas(app)


def ready_one(app: App) -> bool:
    reps = replicas(app)
    return len(reps) == 1 and reps[0]["state"] == "READY"


@dataclass
class Result:
    load_before: str
    load_after: str = ""
    first: list[float] = field(default_factory=list)  # one request from zero, seconds
    bursts: list[dict[str, object]] = field(default_factory=list)
    warm_single: list[float] = field(default_factory=list)
    warm_burst: dict[str, object] = field(default_factory=dict)
    no_hold: dict[str, object] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)


def summary(results: list[tuple[int | str, float]]) -> dict[str, object]:
    ok = sorted(t for s, t in results if s == 200)
    statuses: dict[str, int] = {}
    for s, _ in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    return {"sent": len(results), "ok": len(ok), "statuses": statuses,
            "p50_ms": round(ok[len(ok) // 2] * 1000, 1) if ok else None,
            "max_ms": round(ok[-1] * 1000, 1) if ok else None}


def run(args: argparse.Namespace, folder: Path) -> Result:
    result = Result(uptime())
    with App(folder / "zero") as app:
        app.write(manifest("bench-zero", app.gateway_port, True))
        app.up()
        # Requests keep it from going idle meanwhile (it may be at zero already).
        wait_for(lambda: request(app.gateway_port)[0] == 200 and ready_one(app), 60,
                 "a READY replica")
        result.warm_single = [request(app.gateway_port)[1] for _ in range(args.rounds)]
        result.warm_burst = summary(burst(app.gateway_port, args.burst))
        for _ in range(args.rounds):
            wait_for(lambda: at_zero(app), 60, "zero replicas (idle)")
            status, took = request(app.gateway_port)
            if status != 200:
                raise RuntimeError(f"the first request from zero got {status}")
            result.first.append(took)
            wait_for(lambda: at_zero(app), 60, "zero replicas (idle)")
            result.bursts.append(summary(burst(app.gateway_port, args.burst)))
        result.decisions = [e["message"] for e in app.events()
                            if e["type"] == "service.autoscaled"][:4]
    with App(folder / "nohold") as plain:
        plain.write(manifest("bench-zero-nohold", plain.gateway_port, False))
        plain.up()
        plain.cli("scale", "work=0")
        wait_for(lambda: at_zero(plain), 60, "zero replicas (mso scale work=0)")
        result.no_hold = summary(burst(plain.gateway_port, args.burst))
    result.load_after = uptime()
    return result


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    return (f"{ordered[len(ordered) // 2] * 1000:.0f} / {ordered[-1] * 1000:.0f} ms"
            if ordered else "-")


def uptime() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def _statuses(summary: dict[str, object]) -> str:
    statuses = summary.get("statuses") or {}
    assert isinstance(statuses, dict)
    return ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))


def report(r: Result, args: argparse.Namespace, command: str) -> str:
    lost = sum(int(b["sent"]) - int(b["ok"]) for b in r.bursts)  # type: ignore[call-overload]
    sent = sum(int(b["sent"]) for b in r.bursts)  # type: ignore[call-overload]
    burst_p50 = [float(b["p50_ms"]) for b in r.bursts if b["p50_ms"] is not None]  # type: ignore[arg-type]
    burst_max = [float(b["max_ms"]) for b in r.bursts if b["max_ms"] is not None]  # type: ignore[arg-type]
    lines = [
        HEADING, "",
        "The first requests to a service at zero replicas, on the local engine: a small "
        "Python HTTP service (`bench/autoscale/app.py`, no work per request, readiness "
        "`/ready` every 100 ms) with `autoscale: {min: 0, max: 3, target_rps_per_replica: "
        "50, idle: 2s}`. Each round waits until it is back at zero (2 s idle, then the "
        "drain), then sends one request, or " f"{args.burst} at once. {args.rounds} rounds "
        "of each.", "",
        f"Reproduce: `{command}`", "",
        "| | one request: latency p50 / max | " f"{args.burst} at once: answered 200 | "
        f"{args.burst} at once: latency p50 / max |", "|---|---|---|---|",
        f"| from zero, held by the proxy (`min: 0`) | {ms(r.first)} | {sent - lost} of {sent} "
        f"| {_median(burst_p50):.0f} (median of the rounds) / "
        f"{max(burst_max, default=0):.0f} ms |",
        f"| one replica already READY (the floor) | {ms(r.warm_single)} | "
        f"{r.warm_burst.get('ok')} of {r.warm_burst.get('sent')} | "
        f"{r.warm_burst.get('p50_ms')} / {r.warm_burst.get('max_ms')} ms |",
        f"| at zero without a hold (`mso scale work=0`, no `autoscale`) | - | "
        f"{r.no_hold.get('ok')} of {r.no_hold.get('sent')} ({_statuses(r.no_hold)}) | - |",
        "",
        f"Goals: first request from zero under 1 s; 0 of {args.burst} lost at zero.", "",
        f"Machine: {os.cpu_count()} CPUs, shared with other work; load average (1, 5, 15 "
        f"min) {r.load_before} before, {r.load_after} after.", "",
        "Where the time from zero goes: the proxy parks the request and answers the "
        "daemon's `held` long poll at once; the daemon sets 0 -> 1, starts the process "
        "(a Python interpreter: most of the time), the readiness probe passes on its "
        "first or second check, the daemon pushes the route table and the proxy "
        "releases the parked requests in order. The first decisions of the run:", "",
        *[f"- {d}" for d in r.decisions], "",
        "Knative, for comparison (not run here: no Knative on this machine): its "
        "activator holds requests at zero the same way, and by default it goes to zero "
        "after a 60 s stable window without traffic plus up to a 30 s grace period "
        "(`stable-window`, `scale-to-zero-grace-period`); its cold start adds a pod to "
        "schedule and a queue-proxy sidecar to become ready to the process start "
        "measured here.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    command = "PYTHONPATH=src .venv/bin/python bench/autoscale/zero.py"
    for name in ("rounds", "burst"):
        if getattr(args, name) != parser.get_default(name):
            command += f" --{name} {getattr(args, name)}"
    with tempfile.TemporaryDirectory(prefix="mso-bench-zero-") as tmp:
        result = run(args, Path(tmp))
    text = report(result, args, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2))
    if not args.no_write:
        write_section(HEADING, text)


if __name__ == "__main__":
    main()
