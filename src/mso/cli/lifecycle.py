"""Starting, waiting for and stopping the daemon from the CLI.

The daemon runs in its own session, so a killed terminal never takes the app down.
`mso up` in the foreground follows the logs and turns Ctrl-C into `mso down`.
"""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mso.cli import waiting
from mso.cli.client import ApiClient, CliError, NotRunning, StartupFailed
from mso.cli.output import log_line
from mso.daemon.containers import IMAGES_KEY
from mso.daemon.keeper import ALREADY_KEPT
from mso.engines.local import container as container_cli
from mso.engines.local.process import INSTANCE_ENV, find_env_processes
from mso.errors import Failed
from mso.engines.problems import REPORT_LOG_LINES
from mso.paths import StatePaths
from mso.ports import bind_error, port_holder, port_holder_pid
from mso.store.db import Store

if TYPE_CHECKING:
    from mso.spec.load import LoadedManifest

START_TIMEOUT = 30.0
FAILURE_EVENTS = ("job.failed", "daemon.error", "proxy.error")
#: How long a foreground `mso up` watches for everything to become READY.
FOREGROUND_PATIENCE = 600.0


def state_dir_problem(paths: StatePaths) -> str | None:
    """Why the daemon cannot start in `paths.state_dir`, checked before it is started:
    a read-only filesystem takes none of its lock, log, sockets or store (a full one
    still takes new files and sockets: the daemon then starts and serves from its store,
    mso.store.health). None when it can start."""
    try:
        paths.ensure()
        fd = os.open(paths.state_dir / ".mso-start-check",
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        (paths.state_dir / ".mso-start-check").unlink()
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC,
                             errno.EDQUOT):
            raise
        return (f"the daemon cannot start: {paths.state_dir} takes no writes "
                f"({exc.strerror}); it keeps its lock, log, sockets and store there "
                f"(remount it read-write, or free space, and run `mso up` again)")
    return None


def start_daemon(paths: StatePaths, manifest: Path | None, api_port: int | None) -> None:
    problem = state_dir_problem(paths)
    if problem is not None:
        raise CliError(problem)
    # The keeper runs the daemon and starts it again if it dies (mso/daemon/keeper.py).
    argv = [sys.executable, "-m", "mso.daemon.keeper", "--state-dir", str(paths.state_dir)]
    if manifest is not None:
        argv += ["--manifest", str(manifest)]
    if api_port is not None:
        argv += ["--api-port", str(api_port)]
    with open(paths.daemon_log, "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    client = ApiClient(paths)
    deadline = time.monotonic() + START_TIMEOUT
    elsewhere = False
    while time.monotonic() < deadline:
        if client.alive():
            return
        status = None if elsewhere else proc.poll()
        if status == ALREADY_KEPT:
            # Another keeper runs this app's daemon (it is being started again after a
            # crash): wait for it to answer rather than start a second one.
            elsewhere = True
        elif status is not None:
            raise CliError(f"the daemon exited at start-up: {_start_failure(paths)}")
        time.sleep(0.05)
    raise CliError(f"the daemon did not answer within {START_TIMEOUT:g}s; "
                   f"see {paths.daemon_log}")


#: Less free space than this in `.mso/` explains a daemon that could not start.
FULL_BELOW = 64 * 1024


def _start_failure(paths: StatePaths) -> str:
    """Why the daemon ended at start-up: its last words, or, when a full disk kept it
    from writing them, the disk's state."""
    last = _last_line(paths.daemon_log)
    try:
        st = os.statvfs(paths.state_dir)
    except OSError:
        return last
    free = st.f_bavail * st.f_frsize
    if free >= FULL_BELOW:
        return last
    return (f"the disk of {paths.state_dir} is full ({free} bytes free): the daemon's store "
            f"and log cannot be written" + ("" if last == "no log" else f" ({last})")
            + "; free some space and run `mso up` again")


def _last_line(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    last = lines[-1] if lines else "no log"
    return last[len("mso: "):] if last.startswith("mso: ") else last


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
        store = Store.open_readonly(paths.db)
        try:
            return max((e.id for e in store.events(0, None, 1)), default=0)
        finally:
            store.close()
    except sqlite3.Error:
        return 0


class _FailureEvents:
    """Failure events newer than `after` (a failed job, the proxy or daemon), fetched
    incrementally: each poll asks only for events it has not seen. Asking from `after`
    every 0.2 s re-sent the same 1,000 events each time while 1,000 replicas started."""

    def __init__(self, after: int) -> None:
        self.cursor = after
        self.found: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()

    def poll(self, client: ApiClient) -> list[dict[str, Any]]:
        while True:
            batch = client.get("/v1/events", after=self.cursor, limit=1000)
            for e in batch:
                self.cursor = max(self.cursor, int(e["id"]))
                self._note(e)
            if len(batch) < 1000:
                return list(self.found)

    def _note(self, e: dict[str, Any]) -> None:
        if e["type"] not in FAILURE_EVENTS:
            return
        who = e.get("replica") or e.get("service") or ("proxy" if e["type"].startswith("proxy")
                                                      else "mso")
        if (who, e["message"]) in self._seen:
            return
        self._seen.add((who, e["message"]))
        self.found.append({"service": e.get("service") or "mso", "replica": who,
                           "state": "FAILED" if e["type"] == "job.failed" else "ERROR",
                           "reason": e["message"], "problem": None})


def _event_failures(client: ApiClient, after: int) -> list[dict[str, Any]]:
    """Failures recorded as events after `after`: a failed job, the proxy or daemon."""
    return _FailureEvents(after).poll(client)


#: While /v1/status says replicas are still starting, the full replica list (/v1/ps,
#: 1,000 rows at scale, each with its problem diagnosis) is fetched at most this often to
#: look for problems; and once more to confirm when status says every replica is ready.
PS_EVERY = 1.0


def _with_logs(client: ApiClient, failing: list[dict[str, Any]],
               since: float | None) -> list[dict[str, Any]]:
    out = []
    for row in failing:
        logs: list[dict[str, Any]] = []
        if row.get("service") not in (None, "mso") and row.get("replica"):
            try:
                logs = client.get("/v1/logs", service=row["service"], replica=row["replica"],
                                  tail=REPORT_LOG_LINES, since=since)
            except CliError:
                logs = []
        out.append({**row, "logs": logs})
    return out


def _summary(failing: list[dict[str, Any]]) -> str:
    by_service: dict[str, list[str]] = {}
    for row in failing:
        problem = row.get("problem") or {}
        if not problem and row.get("state") not in ("FAILED", "ERROR"):
            continue  # context, not a failure
        what = str(problem.get("kind") or row.get("state", "failed")).lower().replace("_", " ")
        by_service.setdefault(str(row.get("service")), []).append(what)
    parts = []
    for service, kinds in by_service.items():
        counted = ", ".join(f"{kinds.count(k)} {k}" if kinds.count(k) > 1 else k
                            for k in dict.fromkeys(kinds))
        parts.append(f"{service} ({counted})")
    return "; ".join(parts)


def wait_ready(client: ApiClient, timeout: float, after: int, since: float | None = None,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> float:
    """Block until every desired replica of the current releases is READY and every job
    succeeded; returns the seconds it took.

    Ends early (`StartupFailed`) as soon as a replica has a problem (a crash loop, a
    failed start, a port nothing listens on, a readiness probe that keeps failing: see
    mso.engines.problems) or a failure event newer than `after` (see `last_event_id`) was
    recorded: a failed job, a proxy or daemon error. Log lines shown are those written
    after `since` (wall clock), so an earlier run's output is not mistaken for this one's.
    """
    began = clock()
    deadline = began + timeout
    status: dict[str, Any] = {}
    ps: dict[str, Any] = {"replicas": []}
    events = _FailureEvents(after)
    ps_at = float("-inf")
    while True:
        status = client.get("/v1/status")
        jobs_done = all(s == "succeeded" for s in status["jobs"].values())
        all_ready = jobs_done and status["ready_replicas"] == status["desired_replicas"]
        failing: list[dict[str, Any]] = []
        if all_ready or clock() - ps_at >= PS_EVERY:
            ps, ps_at = client.get("/v1/ps"), clock()
            if all_ready and all(r["state"] == "READY" and not r["draining"]
                                 for r in ps["replicas"]):
                return clock() - began
            failing = [r for r in ps["replicas"] if r.get("problem") and not r["draining"]]
        if failing:  # the same services' other unready replicas tell the rest of the story
            services = {r["service"] for r in failing}
            failing += [r for r in ps["replicas"] if r["service"] in services
                        and not r.get("problem") and r["state"] != "READY"
                        and not r["draining"]]
        failing += events.poll(client)
        if failing:
            raise StartupFailed(f"start-up failed: {_summary(failing)}",
                                _with_logs(client, failing, since))
        if clock() >= deadline:
            break
        sleep(0.2)
    pending = [r for r in ps["replicas"] if r["state"] != "READY" and not r["draining"]]
    pending += [{"service": name, "replica": name, "state": "WAITING", "reason": why,
                 "problem": None} for name, why in (ps.get("waiting") or {}).items()]
    pending += [{"service": name, "replica": f"{name}-job", "state": state.upper(),
                 "reason": f"job {state}", "problem": None}
                for name, state in status["jobs"].items() if state != "succeeded"]
    raise StartupFailed(f"not READY after {timeout:g}s: {status.get('ready_replicas')}/"
                        f"{status.get('desired_replicas')} replicas ready",
                        _with_logs(client, pending, since))


ACTIVE_PHASES = ("Progressing", "Paused", "Inconclusive")


def wait_deployed(client: ApiClient, changed: dict[str, int], timeout: float, after: int,
                  since: float | None = None, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep,
                  say: Callable[[str], None] = lambda line: None) -> dict[str, str]:
    """`mso deploy --wait`: follow the rollouts of the `changed` services (name -> new
    release) to their end; returns each one's last phase. Like `wait_ready`, ends early
    (`StartupFailed`) when a replica of a new release has a problem, and when a rollout
    ends rolled back or failed (the controller rolled it back by itself)."""
    deadline = clock() + timeout
    last: dict[str, tuple[Any, ...]] = {}
    while True:
        phases: dict[str, str] = {}
        for service, release in changed.items():
            status = client.get(f"/v1/services/{service}/rollout")
            ours = status.get("to_release") == release
            phase = str(status.get("phase") or "") if ours else ""
            phases[service] = phase
            if ours and last.get(service) != waiting.change_key(status):
                last[service] = waiting.change_key(status)
                say(waiting.change_line(status))
            if phase in ("RolledBack", "Failed"):
                ps = client.get("/v1/ps")
                rows = [r for r in ps["replicas"] if r["service"] == service
                        and r["release"] == release]
                raise StartupFailed(f"{service}: release {release} was "
                                    f"{'rolled back' if phase == 'RolledBack' else 'failed'}"
                                    f": {status.get('reason')}",
                                    _with_logs(client, rows, since))
        ps = client.get("/v1/ps")
        failing = [r for r in ps["replicas"] if r.get("problem") and not r["draining"]
                   and changed.get(r["service"]) == r["release"]]
        failing += _event_failures(client, after)
        if failing:
            raise StartupFailed(f"deploy failed: {_summary(failing)} (a rollout goes on: "
                                "it rolls back by itself at its progress_deadline, or "
                                "`mso rollout abort SERVICE` now)",
                                _with_logs(client, failing, since))
        status = client.get("/v1/status")
        if not any(p in ACTIVE_PHASES for p in phases.values()) \
                and status["ready_replicas"] == status["desired_replicas"]:
            return phases
        if clock() >= deadline:
            rolling = ", ".join(f"{s} ({p or 'not started'})" for s, p in phases.items()
                                if p not in ("Promoted",))
            raise StartupFailed(f"not done after {timeout:g}s: {rolling or 'replicas'} "
                                "still rolling out; `mso rollout status SERVICE` says why",
                                [])
        sleep(0.3)


def running_summary(client: ApiClient) -> str:
    """What runs now, in one line (for a failed `up -d` that leaves the app running)."""
    try:
        status = client.get("/v1/status")
        ps = client.get("/v1/ps")
    except CliError:
        return "the app is still running"
    services = {r["service"] for r in ps["replicas"]}
    return (f"left running: the daemon (pid {status['pid']}), the proxy and "
            f"{len(ps['replicas'])} replica(s) of {len(services)} service(s); "
            "`mso ps` shows them, `mso down` stops them")


def preflight_ports(loaded: LoadedManifest, paths: StatePaths) -> None:
    """Refuse to start when a port the manifest names is taken, before anything starts
    (so a failed `up` leaves nothing behind), naming the process that holds it. A port
    held by this app's own proxy, which outlived its daemon, is not taken: the new daemon
    adopts that proxy."""
    ours = set(_survivors(paths))
    m = loaded.manifest
    wanted = [("gateway.port", m.gateway.bind, m.gateway.port)]
    if m.gateway.tls is not None:
        wanted.append(("gateway.tls.port", m.gateway.bind, m.gateway.tls.port))
    for name, service in m.services.items():
        if service.rollout.preview_port:
            wanted.append((f"services.{name}.rollout.preview_port", m.gateway.bind,
                           service.rollout.preview_port))
    for field, host, port in wanted:
        error = bind_error(host, port)
        if error is None:
            continue
        if error.errno == errno.EADDRINUSE:
            if port_holder_pid(port) in ours:
                continue
            holder = port_holder(port)
            why = f"taken by {holder}" if holder else "taken by another program"
            raise CliError(str(loaded.error(field, f"port {port} on {host} is {why}; "
                                                   "stop it or choose another port")))
        raise CliError(str(loaded.error(field, f"cannot listen on {host}:{port}: "
                                               f"{(error.strerror or str(error)).lower()}")))


def down_app(paths: StatePaths, quiet: bool = False) -> None:
    client = ApiClient(paths)
    if not client.alive():
        survivors = _survivors(paths)
        if not survivors:
            if not quiet:
                click.echo("nothing is running")
            return
        problem = state_dir_problem(paths)
        if problem is not None and 0 not in survivors:
            # No daemon can start on this disk (read-only): stop them here, as a daemon
            # would, so `down` still leaves no process behind.
            stop_directly(survivors, quiet)
            return
        # The daemon died (kill -9?) but processes it started live on: start one without
        # a manifest to adopt and then stop them, so `down` leaves no process behind.
        start_daemon(paths, None, None)
    pid = client.get("/v1/status")["pid"]
    client.post("/v1/down")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if not quiet:
        click.echo("stopped")


def stop_directly(pids: list[int], quiet: bool, grace: float = 10.0) -> None:
    """SIGTERM to each process (and its process group: a replica's children), SIGKILL to
    what is left after `grace`: `mso down` where no daemon can start."""
    if not quiet:
        click.echo(f"mso: no daemon can start on this disk; stopping the app's {len(pids)} "
                   f"process(es) directly", err=True)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            for kill, target in ((os.killpg, pid), (os.kill, pid)):
                try:
                    if kill is os.killpg and os.getpgid(pid) != pid:
                        continue
                    kill(target, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.05)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    if not quiet:
        click.echo("stopped")


def _survivors(paths: StatePaths) -> list[int]:
    """Processes of this app still alive without a daemon (replicas, proxy, anything
    carrying the instance marker); [0] for containers left without their client."""
    if not paths.db.exists():
        return []
    try:
        store = Store.open_readonly(paths.db)
        try:
            instance = store.get_meta("instance_id")
            ran_containers = store.get_meta(IMAGES_KEY) is not None
        finally:
            store.close()
    except sqlite3.Error:
        return [0]  # unreadable state: let a daemon look (it reports what it finds)
    found = find_env_processes({INSTANCE_ENV: instance}) if instance else []
    if not found and instance and ran_containers:
        try:
            binary = container_cli.runtime()
        except container_cli.RuntimeMissing:
            return found
        if container_cli.labelled({f"{container_cli.LABEL}.instance": instance}, binary):
            return [0]  # a daemon removes them (by label)
    return found


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


def follow_foreground(client: ApiClient, gateway: str, after: int,
                      before_down: Callable[[], None] = lambda: None) -> None:
    """Print events and logs until Ctrl-C or SIGTERM, then bring the app down (after
    `before_down`: `mso up --watch` stops watching first). A watcher says once when
    everything is READY (and where the gateway is), or why not yet."""
    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and `kill -INT`
    # must still mean "bring the app down" rather than nothing at all.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=_announce_ready, args=(client.paths, gateway, after),
                     name="ready-watch", daemon=True).start()
    try:
        for item in client.stream("GET", "/v1/logs", follow="true", tail=0):
            click.echo(log_line(item))
    except KeyboardInterrupt:
        click.echo("stopping (Ctrl-C again to leave it running)...", err=True)
    except NotRunning:
        return
    before_down()
    try:
        down_app(client.paths)
    except KeyboardInterrupt:
        click.echo("left running; use `mso down`", err=True)


def _announce_ready(paths: StatePaths, gateway: str, after: int) -> None:
    client = ApiClient(paths)
    try:
        took = wait_ready(client, FOREGROUND_PATIENCE, after, since=time.time())
        click.echo(f"mso: ready in {took:.1f}s: every replica is READY; gateway {gateway}",
                   err=True)
    except StartupFailed as exc:
        from mso.cli.output import failure_report
        failure_report(exc.failing, header=str(exc))
        click.echo("mso: still running; fix it and save (or `mso deploy`), or Ctrl-C to stop",
                   err=True)
    except CliError:
        pass
    finally:
        client.close()
