"""`mso import` and `mso up compose.yaml` end to end: a compose file whose services run
this machine's Python as processes, imported, validated, run, answering through the
gateway, and taken down."""

from __future__ import annotations

import sys

from tests.e2e.harness import ECHO, MsoApp, wait_for

COMPOSE = """\
name: imported
services:
  api:
    command: [PYTHON, ECHO_APP]
    ports: ["GATEWAY_PORT:8000"]
    environment:
      GREETING: hello
    healthcheck:
      test: [CMD, PYTHON, -c, "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ['PORT'], timeout=1)"]
      interval: 1s
      timeout: 2s
      retries: 3
    deploy:
      replicas: 2
    depends_on:
      migrate: {condition: service_completed_successfully}
  migrate:
    command: PYTHON -c "print('migrated')"
"""


def _write(app: MsoApp) -> None:
    (app.folder / "compose.yaml").write_text(
        COMPOSE.replace("GATEWAY_PORT", str(app.gateway_port)).replace("ECHO_APP", ECHO)
        .replace("PYTHON", sys.executable))


def test_import_then_validate(app: MsoApp) -> None:
    _write(app)
    done = app.cli("import", "compose.yaml", "-o", "mso.yaml")
    assert "services.api.healthcheck.test: translated -> services.api.health.readiness.exec" \
        in done.stderr
    assert "valid for local (1 service, 1 job)" in app.cli("validate").stdout


def test_up_a_compose_file_answers_through_the_gateway(app: MsoApp) -> None:
    _write(app)
    started = app.cli("up", "-d", "--timeout", "90", "compose.yaml")
    assert "mso import: compose.yaml:" in started.stderr  # the report, on stderr
    app.instance = app.status()["instance"]
    status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(app.get("/")),
                            timeout=30, message="the api through the gateway")
    assert status == 200 and body.startswith("api-")
    replicas = app.json("ps", "-f", "compose.yaml")["replicas"]
    assert sorted(r["service"] for r in replicas) == ["api", "api"]
    assert all(r["state"] == "READY" for r in replicas)
    jobs = app.json("ps", "-f", "compose.yaml")["jobs"]
    assert "migrate" in jobs, jobs
    # the daemon reads the compose file again: a change is a new release
    compose_file = app.folder / "compose.yaml"
    compose_file.write_text(compose_file.read_text().replace("GREETING: hello", "GREETING: bye"))
    deployed = app.cli("deploy", "-f", "compose.yaml", "--wait", "--timeout", "90")
    assert "api: release 2" in deployed.stdout, deployed.stdout
    app.cli("down", "-f", "compose.yaml")
    assert app.cli("ps", "-f", "compose.yaml", check=False).returncode in (0, 1)


def test_up_a_procfile(app: MsoApp) -> None:
    """web answers through the gateway on $PORT; release ran before it."""
    (app.folder / "Procfile").write_text(
        f"web: {sys.executable} {ECHO}\n"
        f"release: {sys.executable} -c \"open('released', 'w').write('1')\"\n")
    app.cli("import", "Procfile", "-o", "mso.yaml")
    manifest = app.manifest.read_text()
    app.manifest.write_text(manifest.replace("routes:", f"gateway: {{port: {app.gateway_port}}}\nroutes:"))
    app.up()
    assert (app.folder / "released").read_text() == "1"
    status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(app.get("/")),
                            timeout=30, message="web through the gateway")
    assert body.startswith("web-")
