"""`user:` on the embedded engine, tried as a new user would (issue 20, item 2): Debian's
PostgreSQL under mso as root with `user: postgres`. PostgreSQL refuses to run as root and
needs a data folder it owns (0700); mso drops privileges itself (no runuser between its
stop signal and the server) and hands the service its data folder. pgbench runs through
mso's TCP address, a `recreate` restart keeps the data (and stops the server with its
SIGINT: a fast shutdown), and a `kill -9` of the server is recovered from.

Also: `user: dynamic` makes a user at start and removes it at `mso down`, and a secret
and a config file reach a replica that runs as another user (`.mso/` stays 0700)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.harness import MsoApp, wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")]

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), "")
needs_pg = pytest.mark.skipif(not PG_BIN, reason="postgresql is not installed "
                              "(scripts/setup.sh installs it)")

PG_MANIFEST = """
app: APPNAME
gateway: {port: GATEWAY_PORT}
services:
  db:
    user: postgres
    shell: true
    run: >-
      test -f "$MSO_DATA_DIR/pg/PG_VERSION" ||
      PG_BIN/initdb -D "$MSO_DATA_DIR/pg" -U postgres --auth=trust >/dev/null &&
      exec PG_BIN/postgres -D "$MSO_DATA_DIR/pg" -p "$PORT" -k "$MSO_DATA_DIR"
      -c listen_addresses=127.0.0.1 -c fsync=off
    ports:
      pg: {port: 5432, protocol: tcp}
    stop: {signal: SIGINT, grace: 30s}
    rollout: {strategy: recreate}
    health:
      readiness: {tcp: pg, period: 200ms, timeout: 2s}
"""


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def data_root(app: MsoApp) -> Path:
    from mso.daemon.replica_env import DATA_ROOT, app_key
    from mso.paths import StatePaths
    return DATA_ROOT / app_key(StatePaths.for_manifest(app.manifest))


def pg(app_: MsoApp, tool: str, *args: str) -> str:
    host, port = app_.json("endpoints")["services"]["db"]["address"].rsplit(":", 1)
    done = subprocess.run([f"{PG_BIN}/{tool}", "-h", host, "-p", port, "-U", "postgres",
                           *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def ready_pid(app: MsoApp, not_pid: int | None = None) -> int:
    def one() -> int | None:
        reps = app.replicas("db")
        if len(reps) == 1 and reps[0]["state"] == "READY" and reps[0]["pid"] != not_pid:
            return int(reps[0]["pid"])
        return None
    return int(wait_for(one, 60, message="db READY"))


@needs_pg
def test_postgresql_runs_as_postgres_under_mso(app: MsoApp) -> None:
    app.write(PG_MANIFEST.replace("APPNAME", f"pg{os.getpid()}").replace("PG_BIN", PG_BIN))
    try:
        app.up(timeout=120)
        pid = ready_pid(app)
        # mso's own child is the server, as postgres: no wrapper in between.
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "postgres"
        assert uid_of(pid) == pwd.getpwnam("postgres").pw_uid
        status = Path(f"/proc/{pid}/status").read_text()
        assert "CapEff:\t0000000000000000" in status, status  # root's powers are gone
        assert (app.folder / ".mso").stat().st_mode & 0o777 == 0o700

        pg(app, "pgbench", "-i", "-s", "1", "-q", "postgres")
        out = pg(app, "pgbench", "-c", "4", "-j", "2", "-t", "100", "postgres")
        assert "number of transactions actually processed: 400/400" in out, out
        count = "select count(*) from pgbench_history"
        assert pg(app, "psql", "-tAc", count, "postgres").strip() == "400"

        # recreate: the old server stops (SIGINT: a fast shutdown) before the new one
        # starts on the same data folder, which keeps the data.
        app.cli("restart", "db")
        new = ready_pid(app, not_pid=pid)
        assert pg(app, "psql", "-tAc", count, "postgres").strip() == "400"
        logs = app.cli("logs", "db", "--tail", "500").stdout
        assert "received fast shutdown request" in logs, logs

        # kill -9: mso starts it again and PostgreSQL recovers (nothing lost that was
        # committed before).
        os.kill(new, signal.SIGKILL)
        ready_pid(app, not_pid=new)
        assert pg(app, "psql", "-tAc", count, "postgres").strip() == "400"
        logs = app.cli("logs", "db", "--tail", "500").stdout
        assert "automatic recovery in progress" in logs, logs
    finally:
        app.teardown()
        shutil.rmtree(data_root(app), ignore_errors=True)


DYNAMIC_MANIFEST = """
app: APPNAME
gateway: {port: GATEWAY_PORT}
routes:
  - {path: /, service: who}
services:
  who:
    user: dynamic
    run: [PYTHON, -c, "CODE"]
    ports: {http: 8000}
    secrets:
      token: {file: token.txt}
    config:
      - {source: settings.ini, target: conf/settings.ini}
"""

CODE = ("import http.server as h, os, json; "
        "body = json.dumps(dict(uid=os.getuid(), user=os.environ.get('USER'), "
        "secret=open(os.environ['MSO_SECRETS'] + '/token').read(), "
        "config=open(os.environ['MSO_CONFIG_DIR'] + '/conf/settings.ini').read(), "
        "data=os.access(os.environ['MSO_DATA_DIR'], os.W_OK))).encode(); "
        "R = type('R', (h.BaseHTTPRequestHandler,), dict(do_GET=lambda s: (s.send_response(200), "
        "s.end_headers(), s.wfile.write(body)))); "
        "h.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), R).serve_forever()")


def test_a_dynamic_user_is_made_at_start_and_removed_at_down(app: MsoApp) -> None:
    import json
    from mso.spec.users import dynamic_name
    name = f"dyn{os.getpid()}"
    (app.folder / "token.txt").write_text("s3cret")
    (app.folder / "settings.ini").write_text("[a]\nb = 1\n")
    # Debian's python3: the user may not enter the virtualenv's interpreter's home.
    app.write(DYNAMIC_MANIFEST.replace("APPNAME", name).replace("PYTHON", "/usr/bin/python3")
              .replace("CODE", CODE.replace('"', '\\"')))
    user = dynamic_name(name, "who")
    try:
        app.up()
        entry = pwd.getpwnam(user)
        assert entry.pw_shell.endswith("nologin") and entry.pw_uid < 1000
        status, body = app.get("/")
        assert status == 200, body
        seen = json.loads(body)
        assert seen == {"uid": entry.pw_uid, "user": user, "secret": "s3cret",
                        "config": "[a]\nb = 1\n", "data": True}
        # `mso run` in the service runs as its user too.
        out = app.cli("run", "who", "--", "id", "-un").stdout
        assert out.strip() == user
        app.cli("down")
        with pytest.raises(KeyError):
            pwd.getpwnam(user)
    finally:
        app.teardown()
        shutil.rmtree(data_root(app), ignore_errors=True)
        subprocess.run(["userdel", user], capture_output=True)


def test_another_user_is_refused_at_up_without_root() -> None:
    """As a user other than root, `user:` naming someone else is one line at `mso up`."""
    folder = Path(tempfile.mkdtemp(prefix="mso-noroot-"))  # nobody may enter it
    try:
        os.chmod(folder, 0o755)
        manifest = folder / "mso.yaml"
        manifest.write_text("app: noroot\nservices:\n  web:\n    run: [sleep, '60']\n"
                            "    user: postgres\n")
        shutil.chown(folder, "nobody")
        done = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
             sys.executable, "-m", "mso", "up", "-d"], cwd=folder,
            env=dict(os.environ, HOME=str(folder)), capture_output=True, text=True,
            timeout=60)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith(f"mso: {manifest}:5: services.web.user: "), lines
        assert "not root" in lines[0]
        assert not (folder / ".mso").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
