"""`mso events --engine kubernetes`: the controller's event trail, in the local engine's shape."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mso.engines.kubernetes import state

from tests.store.event_log import MANIFEST, MSO



def test_cli_prints_the_rollout_trail_with_its_numbers(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    store = state.open_store(tmp_path)
    store.add_event("rollout.started", "canary rollout 1 -> 2", "web")
    store.add_event("analysis.fail", "canary errors", "web",
                    data={"verdict": "fail", "canary": {"requests": 80, "errors": 9}})
    store.close()
    proc = subprocess.run([MSO, "events", "--engine", "kubernetes", "--service", "web",
                           "-o", "json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    events = json.loads(proc.stdout)
    assert [e["type"] for e in events] == ["rollout.started", "analysis.fail"]
    assert set(events[1]) == {"id", "ts", "type", "service", "replica", "message", "data"}
    assert events[1]["data"]["canary"]["errors"] == 9


def test_cli_says_when_the_app_was_never_deployed_to_kubernetes(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(MANIFEST)
    proc = subprocess.run([MSO, "events", "--engine", "kubernetes"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and "never deployed to Kubernetes" in proc.stderr
    assert not (tmp_path / ".mso" / state.DB_NAME).exists()
