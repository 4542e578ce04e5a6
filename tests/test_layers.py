"""The import contract (pyproject.toml, [tool.importlinter]): data and imports flow one
way, spec -> store -> releases -> strategies/analysis -> controllers/proxy -> engines ->
daemon/api -> cli/web. import-linter reads the contract; this test runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_layers_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 1 kept, 0 broken." in proc.stdout
