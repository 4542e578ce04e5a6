"""Failing fast on a real Swarm: a service that crashes at start ends `mso deploy` with
the replica, the reason and its last log lines; a gateway port another process holds is
refused before anything is created, naming that process."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.swarm.conftest import mso, mso_json, wait_for

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(600)]
CRASHAPP = Path(__file__).parents[1] / "apps" / "crashapp"
#: Seconds from the first start of the crashing container to the end of `mso deploy`:
#: three exits with Swarm's 0.5 s restart delay take about 4 s on a quiet machine. A bound,
#: not a figure (that is bench/swarm's): the Swarm tests now share the machine with the
#: Kubernetes tests (scripts/test.sh), and this failed once at the old bound of 15 s.
REPORT_WITHIN = 45.0


def _services(app: str) -> list[str]:
    out = subprocess.run(["docker", "service", "ls", "--filter", f"label=mso.app={app}",
                          "--format", "{{.Name}}"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def _first_start(app: str) -> float:
    """When the first task of the app's service was created (Docker's clock)."""
    from mso.engines.swarm.diagnose import epoch
    ids = subprocess.run(["docker", "service", "ps", "-q", f"{app}_api"], capture_output=True,
                         text=True, check=True).stdout.split()
    tasks = json.loads(subprocess.run(["docker", "inspect", *ids], capture_output=True,
                                      text=True, check=True).stdout)
    created = [epoch(t["CreatedAt"]) for t in tasks]
    return min(c for c in created if c is not None)


def test_a_service_that_crashes_at_start_is_reported_with_its_log(deployed: Any) -> None:
    manifest, _ = deployed(CRASHAPP, "crash")
    started = time.monotonic()
    proc = mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent,
               timeout=300, check=False)
    ended, took = time.time(), time.monotonic() - started
    assert proc.returncode == 1, proc.stderr + proc.stdout
    since_start = ended - _first_start("failfast")
    print(f"\nswarm: crash reported {since_start:.1f}s after the first task was created "
          f"({took:.1f}s for the whole deploy, images included)")
    lines = proc.stderr.splitlines()
    assert lines[0] == "mso: stopped waiting: 1 replica has a problem", proc.stderr
    # Three exits make a crash loop; on a busy machine the report may see a fourth.
    assert re.match(r"api api-1 BACKOFF: exited with status 1, [3-9] times in a row",
                    lines[1]), proc.stderr
    logs = [line for line in lines[2:] if line.startswith("    ")]
    assert any(line.endswith("! fatal: DB_URL is not set") for line in logs), proc.stderr
    assert any(line.endswith("  api starting") for line in logs), proc.stderr
    assert len(logs) <= 10
    assert since_start < REPORT_WITHIN, proc.stderr
    # `mso ps` says the same, as data
    rows = wait_for(lambda: [r for r in mso_json("ps", "--engine", "swarm", "-f",
                                                 str(manifest), cwd=manifest.parent)["replicas"]
                             if r["problem"]], 60, "the problem in ps")
    assert rows[0]["problem"]["kind"] == "crash_loop" and rows[0]["pid"] is None
    assert rows[0]["reason"] == rows[0]["problem"]["message"]


def test_a_command_that_does_not_exist_cannot_start(deployed: Any) -> None:
    manifest, _ = deployed(CRASHAPP, "missing")
    text = manifest.read_text().replace("app: failfast", "app: failfast-missing")
    manifest.write_text(text.replace("run: [python3, app.py]", "run: [no-such-tool, --serve]"))
    proc = mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent,
               timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "api api-1 BACKOFF: cannot start: exited with status 127 (command not found)" \
        in proc.stderr, proc.stderr
    assert "mso: cannot start no-such-tool: No such file or directory" in proc.stderr


def test_a_gateway_port_held_by_another_process_is_refused_naming_it(deployed: Any) -> None:
    manifest, port = deployed(CRASHAPP, "taken")
    manifest.write_text(manifest.read_text().replace("app: failfast", "app: failfast-taken"))
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        started = time.monotonic()
        proc = mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent,
                   timeout=120, check=False)
        took = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert proc.stderr.startswith(f"mso: gateway.port {port} is already in use on this "
                                  f"machine by pid {os.getpid()} ("), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert took < 30, took
    assert _services("failfast-taken") == []  # nothing was created


FAILING_JOB = """jobs:
  migrate:
    run: [python3, -c, "import sys; print('fatal: migration 7 failed', file=sys.stderr); sys.exit(2)"]
    before: [api]
"""


def test_a_failed_job_ends_the_deploy_with_its_log(deployed: Any) -> None:
    manifest, _ = deployed(CRASHAPP, "job")
    text = manifest.read_text().replace("app: failfast", "app: failfast-job")
    manifest.write_text(text + FAILING_JOB)
    proc = mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent,
               timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert re.fullmatch(r"migrate migrate-\w+ FAILED: exited with status 2", lines[1]), \
        proc.stderr  # one attempt, as on the other engines
    assert any(line.endswith("! fatal: migration 7 failed") for line in lines[2:]), proc.stderr
    assert "failfast-job_api" not in _services("failfast-job")  # it waits for the job


def test_an_update_that_still_crashes_is_reported_too(deployed: Any) -> None:
    """A new release of a service that crashes: Swarm rolls the in-place update back (the
    update's failure action) or the stand-in crash-loops; either way deploy says so."""
    manifest, _ = deployed(CRASHAPP, "update")
    manifest.write_text(manifest.read_text().replace("app: failfast", "app: failfast-update"))
    run = {"cwd": manifest.parent, "timeout": 300.0, "check": False}
    assert mso("deploy", "--engine", "swarm", "-f", str(manifest), **run).returncode == 1
    manifest.write_text(manifest.read_text().replace("    replicas: 1\n",
                                                     "    replicas: 1\n    env: {V: '2'}\n"))
    proc = mso("deploy", "--engine", "swarm", "-f", str(manifest), **run)
    assert proc.returncode == 1, proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert re.fullmatch(r"api api-(canary-)?1 (BACKOFF|FAILED): exited with status 1.*",
                        lines[1]), proc.stderr
    assert any(line.endswith("! fatal: DB_URL is not set") for line in lines[2:]), proc.stderr
