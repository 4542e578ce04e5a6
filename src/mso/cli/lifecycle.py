"""Starting, waiting for and stopping the daemon from the CLI.

The daemon runs in its own session, so a killed terminal never takes the app down.
`mso up` in the foreground follows the logs and turns Ctrl-C into `mso down`.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from mso.cli.client import ApiClient, CliError, NotRunning
from mso.cli.output import log_line
from mso.paths import StatePaths

START_TIMEOUT = 30.0
FAILURE_EVENTS = ("job.failed", "daemon.error", "proxy.error")


def start_daemon(paths: StatePaths, manifest: Path | None, api_port: int | None) -> None:
    paths.ensure()
    argv = [sys.executable, "-m", "mso.daemon", "--state-dir", str(paths.state_dir)]
    if manifest is not None:
        argv += ["--manifest", str(manifest)]
    if api_port is not None:
        argv += ["--api-port", str(api_port)]
    with open(paths.daemon_log, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    client = ApiClient(paths)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if client.alive():
            return
        if proc.poll() is not None:
            raise CliError(f"the daemon exited at start-up: {_last_line(paths.daemon_log)}")
        time.sleep(0.05)
    raise CliError(f"the daemon did not answer within {START_TIMEOUT:g}s; "
                   f"see {paths.daemon_log}")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"


def _failure(client: ApiClient, after: int) -> str | None:
    for e in client.get("/v1/events", after=after, limit=1000):
        if e["type"] in FAILURE_EVENTS:
            return f"{e.get('service') or 'mso'}: {e['message']}"
    ps = client.get("/v1/ps")
    for r in ps["replicas"]:
        if r["state"] == "FAILED":
            return f"{r['replica']} failed: {r['reason']}"
    return None


def last_event_id(paths: StatePaths, client: ApiClient) -> int:
    """The newest event's id before this command acts: failures up to it are history.

    Read from the daemon when one runs, else straight from the state database (read-only;
    none yet means 0), so a start-up's own failures are never confused with a past run's.
    """
    if client.alive():
        return max((e["id"] for e in client.get("/v1/events", limit=1)), default=0)
    if not paths.db.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{paths.db}?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT max(id) FROM events").fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


def wait_ready(client: ApiClient, timeout: float, after: int) -> None:
    """Block until every desired replica of the current releases is READY; fail on a
    failure event newer than `after` (see `last_event_id`) or a FAILED replica."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = client.get("/v1/status")
        jobs_done = all(s == "succeeded" for s in status["jobs"].values())
        if jobs_done and status["ready_replicas"] == status["desired_replicas"] \
                and _settled(client):
            return
        failure = _failure(client, after)
        if failure:
            raise CliError(f"start-up failed: {failure}")
        time.sleep(0.2)
    raise CliError(f"not READY after {timeout:g}s: {status.get('ready_replicas')}/"
                   f"{status.get('desired_replicas')} replicas ready; see `mso ps` and "
                   "`mso events`")


def _settled(client: ApiClient) -> bool:
    ps = client.get("/v1/ps")
    return all(r["state"] == "READY" and not r["draining"] for r in ps["replicas"])


def down_app(paths: StatePaths) -> None:
    client = ApiClient(paths)
    if not client.alive():
        if not paths.db.exists():
            click.echo("nothing is running")
            return
        # The daemon died (kill -9?): start one without a manifest to adopt and then
        # stop whatever survived, so `down` still leaves no process behind.
        start_daemon(paths, None, None)
    pid = client.get("/v1/status")["pid"]
    client.post("/v1/down")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    click.echo("stopped")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def follow_foreground(client: ApiClient) -> None:
    """Print events and logs until Ctrl-C or SIGTERM, then bring the app down."""
    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and `kill -INT`
    # must still mean "bring the app down" rather than nothing at all.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        for item in client.stream("GET", "/v1/logs", follow="true", tail=0):
            click.echo(log_line(item))
    except KeyboardInterrupt:
        click.echo("stopping (Ctrl-C again to leave it running)...", err=True)
    except NotRunning:
        return
    try:
        down_app(client.paths)
    except KeyboardInterrupt:
        click.echo("left running; use `mso down`", err=True)
