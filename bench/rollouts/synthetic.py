"""Issue 19 item 3: time to a canary verdict for a service with zero user traffic, with
`rollout.analysis.load` (mso's own requests to both subsets) and without it.

One local app (the conformance app, `tests/conformance/apps/conform.py`, 1 replica with a
readiness probe) that nobody sends a request to. Each run deploys a new release as a
canary (`set_weight: 50`, then `analysis: {duration: DURATION}`, `min_samples: 50`,
`progress_deadline: DEADLINE`), either good or answering 500 on every GET (env
`FAIL_STATUS`), with or without `analysis.load: {rate: RATE}`, and waits for the rollout's
end (`mso deploy --wait`). Figures come from the event log's timestamps: from
`rollout.started` to the first decisive verdict (`analysis.fail`, or the analysis step
passing) and to the rollout's end, and how many synthetic requests were sent.

Without load nothing ever reaches the judge: every run ends *Failed* by the progress
deadline (`analysis inconclusive for ...s past its duration`), however good the release
is, which is what the figure shows.

Prints a table and writes it to docs/benchmarks.md under
"## Canary verdicts without user traffic (issue 19)", replacing only that section.

Usage: .venv/bin/python bench/rollouts/synthetic.py [--runs 3] [--rate 20]
       [--duration 5] [--deadline 15] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.docs_section import write_section  # noqa: E402
from tests.e2e.harness import free_port  # noqa: E402

SECTION = "## Canary verdicts without user traffic (issue 19)"
MSO = [sys.executable, "-m", "mso"]
APP = ROOT / "tests" / "conformance" / "apps" / "conform.py"

MANIFEST = """app: synthbench
gateway: {{port: {port}}}
routes:
  - {{path: /, service: web}}
services:
  web:
    run: [python3, conform.py]
    ports: {{http: 8000}}
    env: {{RUN: "{run}"{fail}}}
    health:
      readiness: {{http: /ready, period: 1s}}
    rollout:
      strategy: canary
      progress_deadline: {deadline}s
      steps: [{{set_weight: 50}}, {{analysis: {{duration: {duration}s}}}}]
      analysis:
        min_samples: 50
{load}"""


def mso(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([*MSO, *args], cwd=folder, capture_output=True, text=True, env=env,
                          timeout=600)
    if check and proc.returncode != 0:
        raise RuntimeError(f"mso {' '.join(args)}: {proc.stdout}\n{proc.stderr}")
    return proc


def write(folder: Path, port: int, run: int, bad: bool, load: bool, rate: float,
          duration: float, deadline: float) -> None:
    (folder / "mso.yaml").write_text(MANIFEST.format(
        port=port, run=run, fail=', FAIL_STATUS: "500"' if bad else "",
        deadline=deadline, duration=duration,
        load=f"        load: {{rate: {rate:g}}}\n" if load else ""))


def measure(folder: Path, after: int) -> dict[str, Any]:
    """One rollout's figures from the events written after event id `after`."""
    events = [e for e in json.loads(mso(folder, "events", "--tail", "2000", "-o",
                                        "json").stdout) if e["id"] > after]
    started = next(e["ts"] for e in events if e["type"] == "rollout.started")
    end = next(e for e in events if e["type"] in ("rollout.promoted", "rollout.rolledback",
                                                  "rollout.failed"))
    verdict = next((e for e in events if e["type"] == "analysis.fail"
                    or (e["type"] == "rollout.progressing" and "analysis passed"
                        in e["message"])), None)
    loads = [e for e in events if e["type"] == "analysis.load"
             and not e["data"].get("running")]
    sent = sum(int(s["sent"]) for s in loads[-1]["data"]["subsets"].values()) if loads else 0
    return {"outcome": end["type"].split(".", 1)[1], "reason": end["message"],
            "verdict": None if verdict is None else verdict["ts"] - started,
            "end": end["ts"] - started, "sent": sent,
            "last": max(e["id"] for e in events)}


def last_event(folder: Path) -> int:
    events = json.loads(mso(folder, "events", "--tail", "1", "-o", "json").stdout)
    return int(events[-1]["id"]) if events else 0


def fmt(values: list[float | None]) -> str:
    shown = ", ".join("none" if v is None else f"{v:.1f} s" for v in values)
    numbers = [v for v in values if v is not None]
    median = f"{statistics.median(numbers):.1f} s" if numbers else "-"
    return f"{shown} | {median}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--deadline", type=float, default=15.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mso-synth-bench-"))
    shutil.copy(APP, folder / "conform.py")
    port = free_port()
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    rows: dict[tuple[bool, bool], list[dict[str, Any]]] = {}
    run = 0
    try:
        write(folder, port, run, False, False, args.rate, args.duration, args.deadline)
        mso(folder, "up", "-d")
        plan = [(load, bad) for load in (True, False) for bad in (True, False)
                for _ in range(args.runs if load else 1)]
        for load, bad in plan:
            run += 1
            after = last_event(folder)
            write(folder, port, run, bad, load, args.rate, args.duration, args.deadline)
            mso(folder, "deploy", "--wait", "--timeout", "300", check=False)
            figures = measure(folder, after)
            rows.setdefault((load, bad), []).append(figures)
            print(f"load={load} bad={bad}: {figures}", flush=True)
    finally:
        mso(folder, "down", check=False)
    took = time.monotonic() - began
    lines = [SECTION, "",
             f"Reproduce: `.venv/bin/python bench/rollouts/synthetic.py --runs {args.runs} "
             f"--rate {args.rate:g} --duration {args.duration:g} --deadline "
             f"{args.deadline:g}` (took {took / 60:.1f} min; 1-minute load average "
             f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, "
             f"2 CPUs shared with other work).", "",
             "A canary of a service that gets **no user request at all** (the conformance "
             "app, 1 replica), `set_weight: 50` then `analysis: {duration: "
             f"{args.duration:g}s}}`, `min_samples: 50`, `progress_deadline: "
             f"{args.deadline:g}s`; with `analysis.load: {{rate: {args.rate:g}}}` "
             "(requests per second to each subset, sent by the daemon straight to the "
             "replicas) or without. The bad release answers 500 to every GET. Times from "
             "`rollout.started`.", "",
             "| load | release | runs | outcome | to a decisive verdict | median | to the "
             "end | median | synthetic requests |", "|---|---|---|---|---|---|---|---|---|"]
    for (load, bad), results in rows.items():
        outcomes = ", ".join(sorted({r["outcome"] for r in results}))
        lines.append(f"| {'load' if load else 'none'} | {'bad (500s)' if bad else 'good'} | "
                     f"{len(results)} | {outcomes} | {fmt([r['verdict'] for r in results])} | "
                     f"{fmt([r['end'] for r in results])} | "
                     f"{', '.join(str(r['sent']) for r in results)} |")
    with_load = [r["end"] for (load, _), rs in rows.items() if load for r in rs]
    without = [r["end"] for (load, _), rs in rows.items() if not load for r in rs]
    if with_load and without:
        lines += ["", f"Ratio: without load every rollout ends by the progress deadline "
                  f"with no verdict (median {statistics.median(without):.1f} s, good and bad "
                  f"alike: the good release is failed too); with load the bad release is "
                  f"rolled back and the good one promoted, median "
                  f"{statistics.median(with_load):.1f} s to the end "
                  f"({statistics.median(without) / statistics.median(with_load):.1f}x "
                  "sooner, and with the right outcome)."]
    lines += ["", f"What bounds the time with load: the judge needs `min_samples` (50) "
              f"requests per subset, {50 / args.rate:.1f} s at {args.rate:g} req/s, after the "
              "canary replica has started and passed its readiness probe; a bad release is "
              "rolled back at the first poll past that, a good one passes when the "
              f"{args.duration:g} s analysis step ends."]
    reasons = {r["reason"] for (load, _), rs in rows.items() if not load for r in rs}
    lines += ["", "Without load the rollouts ended with: " +
              "; ".join(f"`{r}`" for r in sorted(reasons)) + "."] if reasons else []
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        write_section(SECTION, report)


if __name__ == "__main__":
    main()
