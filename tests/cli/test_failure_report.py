"""The report a waiting command prints when it gives up on a failing replica, and the
one-line summary `DeployFailed` carries (the same dicts on every engine)."""

from __future__ import annotations

from typing import Any

import pytest

from mso.cli import output
from mso.engines.remote import DeployFailed, failing_replica

ROW = {"service": "api", "replica": "api-1", "release": 2, "subset": "stable",
       "state": "BACKOFF", "pid": None, "restarts": 3,
       "reason": "exited with status 1, 3 times in a row",
       "problem": {"kind": "crash_loop", "message": "exited with status 1, 3 times in a row"}}
LOGS = [{"ts": 1796612761.5 + i, "service": "api", "replica": "api-1", "release": 2,
         "stream": stream, "line": line}
        for i, (stream, line) in enumerate([("stdout", "starting"),
                                            ("stderr", "fatal: DB_URL is not set")])]


def test_a_failing_replica_is_its_ps_fields_and_its_logs() -> None:
    item = failing_replica(ROW, LOGS)
    assert item == {"service": "api", "replica": "api-1", "state": "BACKOFF",
                    "reason": ROW["reason"], "problem": ROW["problem"], "logs": LOGS}


def test_deploy_failed_reads_as_one_line() -> None:
    other = dict(ROW, replica="api-2")
    exc = DeployFailed([failing_replica(ROW, LOGS), failing_replica(other, [])])
    assert str(exc) == ("deploy failed: api-1 (api) BACKOFF: crash_loop: exited with status "
                        "1, 3 times in a row; 1 more failing replica")
    assert "\n" not in str(exc)
    assert len(exc.failing) == 2


def test_the_report_names_each_replica_its_state_reason_and_log_lines(
        capsys: pytest.CaptureFixture[str]) -> None:
    quiet: dict[str, Any] = failing_replica(dict(ROW, replica="api-2", state="RUNNING",
                                                 reason="not ready 10s after start",
                                                 problem=None), [])
    output.failure_report([failing_replica(ROW, LOGS), quiet])
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "mso: stopped waiting: 2 replicas have a problem"
    assert lines[1] == "api api-1 BACKOFF: exited with status 1, 3 times in a row"
    assert lines[2].startswith("    ") and lines[2].endswith("  starting")
    assert lines[3].startswith("    ") and lines[3].endswith("! fatal: DB_URL is not set")
    assert lines[4] == "api api-2 RUNNING: not ready 10s after start"
    assert lines[5] == "    (no log lines)"
    assert lines[-1].startswith("mso: ")
