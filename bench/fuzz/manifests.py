"""Manifest fuzzing benchmark (issue 15): N generated manifests through mso's loader.

    .venv/bin/python bench/fuzz/manifests.py --cases 10000 [--seed 1] [--cli 20]

Half of the cases come from the JSON Schema (`mso schema`), half are mutated examples
(tests/fuzz/manifests.py has both and the oracle). Every case must be a success or a
`file:line` error (ManifestError); anything else is a failure, printed with the case.
`--cli N` also runs `mso validate` in a subprocess on the first N failing-or-not cases of
each source and checks that no traceback escapes and the exit code is 0 or 2.
Prints cases/s, valid/invalid counts and failures (distinct by their first line).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from tests.fuzz import manifests as fz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10000, help="cases per run (split over both sources)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cli", type=int, default=20, help="cases per source also run through `mso validate`")
    args = ap.parse_args()
    from mso.spec.schema import json_schema

    base = Path(tempfile.mkdtemp(prefix="mso-fuzz-"))
    work = fz.workdir(base)
    path = work / "fuzz.yaml"
    failures: Counter[str] = Counter()
    examples: dict[str, bytes] = {}
    counts: Counter[str] = Counter()
    cli_files: list[Path] = []
    sources = {"schema": fz.schema_documents(json_schema()), "examples": fz.mutated_examples()}
    t0 = time.perf_counter()
    def make_run(name: str, strategy: Any, n: int) -> Any:
        @seed(args.seed)
        @settings(max_examples=n, deadline=None, database=None, phases=["generate"],
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(data: bytes) -> None:
            counts[f"{name} cases"] += 1
            path.write_bytes(data)
            try:
                outcome = fz.check(path)
            except fz.FuzzFailure as exc:
                key = str(exc).splitlines()[0][:300]
                failures[key] += 1
                examples.setdefault(key, data)
                return
            counts[f"{name} {'valid' if outcome.valid else 'invalid'}"] += 1
            if counts[f"{name} cli"] < args.cli and (outcome.valid or counts[f"{name} cases"] % 7 == 0):
                counts[f"{name} cli"] += 1
                copy = work / f"cli-{name}-{counts[f'{name} cli']}.yaml"
                copy.write_bytes(data)
                cli_files.append(copy)

        return run

    for name, strategy in sources.items():
        make_run(name, strategy, args.cases // len(sources))()
    elapsed = time.perf_counter() - t0
    total = sum(v for k, v in counts.items() if k.endswith(" cases"))
    cli_bad = run_cli(cli_files, work)
    print(f"manifest fuzzing: {total} cases in {elapsed:.1f} s ({total / elapsed:.0f} cases/s), seed {args.seed}")
    for k in sorted(counts):
        print(f"  {k}: {counts[k]}")
    print(f"  mso validate subprocess runs: {len(cli_files)}, bad: {len(cli_bad)}")
    for line in cli_bad:
        print(f"    {line}")
    print(f"  failures: {sum(failures.values())} ({len(failures)} distinct)")
    for key, n in failures.most_common():
        print(f"    {n} x {key}\n      case: {examples[key][:300]!r}")
    return 1 if failures or cli_bad else 0


def run_cli(files: list[Path], cwd: Path) -> list[str]:
    """`mso validate FILE` on each: exit 0 or 2, no traceback, and on 2 a `file:` message."""
    bad = []
    env = {**os.environ, **fz.ENVIRON, "PYTHONPATH": str(ROOT / "src")}
    for f in files:
        proc = subprocess.run([sys.executable, "-m", "mso", "validate", str(f)], cwd=cwd,
                              capture_output=True, text=True, env=env, timeout=120)
        problem = fz.cli_problem(proc.returncode, proc.stderr, f)
        if problem:
            bad.append(f"{f.name}: {problem}")
    return bad


if __name__ == "__main__":
    sys.exit(main())
