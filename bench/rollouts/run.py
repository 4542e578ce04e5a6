"""Progressive-delivery benchmark: bad-canary rollback, rolling updates and healthy promotion.

Runs real mso apps (the e2e echo service) under paced load on 127.0.0.1, prints the figures
and writes them into docs/benchmarks.md under `## Rollouts (issue 4)`:

    .venv/bin/python bench/rollouts/run.py [--bad-runs 5] [--rolling-updates 10]
                                           [--healthy-runs 1] [--no-write]

Takes about 6-8 minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import judge_floor, peer_estimates  # noqa: E402
from rollout_report import ERRORS, WEIGHT, Floor, Results, render, replace_section  # noqa: E402
from scenarios import bad_canaries, rolling_updates  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def floors() -> list[Floor]:
    return [Floor(c, m, judge_floor(ERRORS, WEIGHT, c, m))
            for c, m in ((0.99, 0.01), (0.99, 0.005), (0.95, 0.01), (0.95, 0.005))]


def machine() -> str:
    head = subprocess.run(["git", "-C", str(DOC.parent), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip() or "unknown"
    return (f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}; mso at commit {head}.")


def command(args: argparse.Namespace) -> str:
    cmd = ".venv/bin/python bench/rollouts/run.py"
    defaults = {"bad_runs": 5, "rolling_updates": 10, "healthy_runs": 1}
    for name, default in defaults.items():
        if getattr(args, name) != default:
            cmd += f" --{name.replace('_', '-')} {getattr(args, name)}"
    return cmd


def write_doc(report: str) -> None:
    # Re-read right before writing: other sections may have changed meanwhile.
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    DOC.write_text(replace_section(text, report))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--bad-runs", type=int, default=5)
    parser.add_argument("--rolling-updates", type=int, default=10)
    parser.add_argument("--healthy-runs", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mso-bench-ro-") as tmp:
        print(f"bad canary x{args.bad_runs} (+ healthy canary x{args.healthy_runs})", flush=True)
        trials, healthy = bad_canaries(Path(tmp) / "canary", args.bad_runs, args.healthy_runs)
        print(f"rolling updates x{args.rolling_updates}", flush=True)
        rolling = rolling_updates(Path(tmp) / "rolling", args.rolling_updates)
    results = Results(canary=trials, rolling=rolling, rolling_rate=300.0, healthy=healthy,
                      peers=peer_estimates(), floors=floors(), command=command(args),
                      minutes=(time.monotonic() - started) / 60.0, machine=machine())
    report = render(results)
    print()
    print(report)
    if not args.no_write:
        write_doc(report)
        print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
