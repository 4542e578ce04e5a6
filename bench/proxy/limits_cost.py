"""What the limits at the edge cost the proxy's hot path (bench/proxy/micro.py, paired).

Interleaves, round by round, the in-process per-request figure of three builds: a checkout
without limits (`--before DIR`, with its own compiled .venv), this tree with a route that
has no limits (what every existing app pays), and this tree with a route that has a rate
and a body limit (`MSO_LIMITS=1`). Medians over the rounds, since one busy moment of a
shared machine moves a single figure by more than the differences measured here.

    .venv/bin/python bench/proxy/limits_cost.py --before /work/main --rounds 6 [--write]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(HERE / "bench"))


def micro(python: str, root: Path, n: int, limits: bool) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("MSO_LIMITS", "MSO_PROXY_PURE")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # the other checkout is read, never written
    if limits:
        env["MSO_LIMITS"] = "1"
    out = subprocess.run([python, str(root / "bench" / "proxy" / "micro.py"), str(n)],
                         cwd=root, env=env, capture_output=True, text=True, check=True).stdout
    match = re.search(r"mypyc[^:]*: ([\d.]+) us", out)
    if match is None:
        raise SystemExit(f"not a compiled build, or no figure: {out!r}")
    return float(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, required=True, help="a checkout without limits")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("-n", type=int, default=100000)
    ap.add_argument("--write", action="store_true", help="write docs/benchmarks.md")
    args = ap.parse_args()
    rows: dict[str, list[float]] = {"before": [], "no limits": [], "rate + body limit": []}
    for _ in range(args.rounds):
        rows["before"].append(micro(str(args.before / ".venv/bin/python"), args.before,
                                    args.n, False))
        rows["no limits"].append(micro(sys.executable, HERE, args.n, False))
        rows["rate + body limit"].append(micro(sys.executable, HERE, args.n, True))
        print({k: v[-1] for k, v in rows.items()}, flush=True)
    base = statistics.median(rows["before"])
    load = os.getloadavg()[0]
    lines = ["## Limits at the edge (issue 20)", "",
             f"Reproduce: `.venv/bin/python bench/proxy/limits_cost.py --before CHECKOUT "
             f"--rounds {args.rounds} -n {args.n} --write` (CHECKOUT: the tree before the "
             "limits, with its compiled .venv). Python work per request in process "
             "(bench/proxy/micro.py: one keep-alive GET and its 200 through the mypyc-built "
             "proxy, no sockets), rounds interleaved, load average at the end "
             f"{load:.1f} on 2 cores.", "",
             "| build | median µs/request | rounds | vs before |", "|---|---|---|---|"]
    for name, values in rows.items():
        med = statistics.median(values)
        lines.append(f"| {name} | {med:.3f} | {', '.join(f'{v:.2f}' for v in values)} | "
                     f"{med - base:+.3f} µs |")
    lines += ["", "A route without limits pays one `is None` test per request (and one "
              "per connection on a listener without a connection limit); a limited route "
              "adds a clock read and its bucket's arithmetic. A difference smaller than the "
              "spread of one build's own rounds is the machine's noise, not the change."]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.write:
        from docs_section import write_section
        write_section("## Limits at the edge (issue 20)", report)


if __name__ == "__main__":
    main()
