"""Issue 15's chaos run, short: bench/chaos/run.py for 45 s must meet every goal.

Replicas, the proxy and the daemon are SIGKILLed and SIGSTOPped at random under 200
GETs/s while a canary rolls out; the run fails on a refused connection, a failed GET
(other than one in flight in a proxy at the instant it was killed), an orphan or
duplicate process, a damaged store, or a rollout that did not end Promoted. The seed is
printed, so a failure can be replayed with `--seed`.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.harness import ROOT

pytestmark = pytest.mark.e2e


def test_short_chaos_run_meets_every_goal() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos" / "run.py"),
                           "--duration", "45", "--every", "3", "--seed", "1",
                           "--no-write"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
