"""Proxy request fuzzing benchmark (issue 15): N generated connections through a real proxy.

    .venv/bin/python bench/fuzz/proxy.py --cases 10000 [--seed 1]

Starts `python -m mso.proxy` (as tests/proxy does) in front of a recording upstream
(tests/fuzz/http.py), sends each generated connection (1-3 pipelined requests, often one
mutated) over a real socket and applies the oracle: forwarded once and intact, or
refused with the right 4xx/5xx and closed, never smuggled, the proxy alive afterwards.
Prints cases/s, outcomes (forwarded / refused by status), mutations, and failures
(distinct by their first line), then exits 1 if there was any.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.fuzz import http as fz  # noqa: E402
from tests.proxy.conftest import Proxy, http_table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    upstream = fz.RecordingUpstream()
    proxy = Proxy()
    table: Any = http_table({"web": {"stable": (100, [upstream])}}, header_timeout=5.0)  # type: ignore[list-item]
    port = proxy.set_table(table)["gw"]
    outcomes: Counter[str] = Counter()
    mutations: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    examples: dict[str, str] = {}
    requests = 0

    @seed(args.seed)
    @settings(max_examples=args.cases, deadline=None, database=None, phases=["generate"],
              suppress_health_check=list(HealthCheck))
    @given(fz.pipelines())
    def run(reqs: list[fz.Request]) -> None:
        nonlocal requests
        requests += len(reqs)
        for r in reqs:
            mutations[r.mutation or "plain"] += 1
        try:
            outcomes[fz.run_case(port, upstream, reqs)] += 1
        except fz.FuzzFailure as exc:
            key = str(exc).splitlines()[0][:300]
            failures[key] += 1
            examples.setdefault(key, repr(b"".join(r.wire() for r in reqs)[:400]))
        if proxy.proc.poll() is not None:
            raise SystemExit(f"the proxy died: {proxy.log()[-2000:]}")

    t0 = time.perf_counter()
    run()
    elapsed = time.perf_counter() - t0
    try:
        fz.probe(port, upstream)
        alive = "yes"
    except fz.FuzzFailure as exc:
        alive = f"NO: {exc}"
    n = sum(outcomes.values()) + sum(failures.values())
    print(f"proxy request fuzzing: {n} connections ({requests} requests) in {elapsed:.1f} s "
          f"({n / elapsed:.0f} connections/s), seed {args.seed}")
    print(f"  requests the upstream parsed: {upstream.snapshot()}; proxy answers a plain request afterwards: {alive}")
    print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print("  requests by mutation: " + ", ".join(f"{k} {v}" for k, v in sorted(mutations.items())))
    print(f"  failures: {sum(failures.values())} ({len(failures)} distinct)")
    for key, count in failures.most_common():
        print(f"    {count} x {key}\n      case: {examples[key]}")
    code = proxy.stop()
    upstream.close()
    print(f"  proxy exit code after SIGTERM: {code}")
    return 1 if failures or alive != "yes" else 0


if __name__ == "__main__":
    sys.exit(main())
