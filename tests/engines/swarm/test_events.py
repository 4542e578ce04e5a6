"""`mso events --engine swarm`: the controller's event trail, in the local engine's shape."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest


from tests.store.event_log import MANIFEST, MSO, seed_events


def _store(tmp_path: Path) -> Path:
    db = tmp_path / ".mso" / "swarm.db"
    db.parent.mkdir()
    return seed_events(db)


def test_cli_prints_the_local_engine_json_shape(tmp_path: Path) -> None:
    _store(tmp_path)
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    proc = subprocess.run([MSO, "events", "--engine", "swarm", "-o", "json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    events = json.loads(proc.stdout)
    assert set(events[1]) == {"id", "ts", "type", "service", "replica", "message", "data"}
    assert events[1]["data"]["canary"]["errors"] == 9


def test_cli_says_when_the_app_was_never_deployed_to_swarm(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    proc = subprocess.run([MSO, "events", "--engine", "swarm"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and "never deployed to Swarm" in proc.stderr
    assert not (tmp_path / ".mso").exists()
