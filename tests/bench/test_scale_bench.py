"""bench/scale/run.py in its short mode: 5 tiny replicas with 1 s probes, through the real
CLI (the benchmark itself runs 10, 100 and 1,000; see docs/benchmarks.md)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_scale_benchmark_short_mode(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale" / "run.py"), "--replicas", "5",
         "--idle", "1", "--settle", "0.5", "--ps-runs", "1", "--no-peer", "--json", str(out)],
        capture_output=True, text=True, timeout=240, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [row] = json.loads(out.read_text())
    assert row["tool"] == "mso" and row["replicas"] == 5 and not row["error"], row
    assert 0 < row["ready_span_s"] <= row["up_s"] < 120
    assert row["cpu"]["daemon"] >= 0 and row["pss_mib"]["daemon"] > 0
    assert row["pss_mib"]["proxy"] > 0 and row["replicas_pss_mib"] > 0
    assert row["ps_s"] > 0 and row["down_s"] > 0
    assert "| mso | 5 |" in proc.stdout
