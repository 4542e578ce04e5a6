"""`mso new service` end to end on the embedded engine (issue 18): a fresh app folder, the
python-http template's own test, `mso up -d`, answers through the gateway, `/healthz` and
`/ready`, a changed manifest deployed as a canary, a request in flight finishing while its
replica drains on SIGTERM, and `mso down`; node-http and worker start and log too."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from tests.e2e.harness import MsoApp, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def answer(app: MsoApp, path: str = "/", **headers: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    return direct("127.0.0.1", app.gateway_port, path, **headers)


def direct(host: str, port: int, path: str, **headers: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_new_python_service_runs_deploys_as_a_canary_and_drains(app: MsoApp) -> None:
    app.manifest.write_text(f"# a fresh app\napp: paved\ngateway: {{port: {app.gateway_port}}}\n")
    made = app.cli("new", "service", "api", "--template", "python-http")
    assert "gateway route /" in made.stdout
    assert app.manifest.read_text().startswith("# a fresh app\napp: paved\n")

    own = subprocess.run([sys.executable, "-m", "unittest", "-q"], cwd=app.folder / "api",
                         capture_output=True, text=True, timeout=120)
    assert own.returncode == 0, own.stdout + own.stderr  # as api/README.md says

    app.up(timeout=120)
    status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(answer(app, "/hi")),
                            timeout=30, message="api through the gateway")
    assert body["message"] == "hello from api" and body["path"] == "/hi"
    assert answer(app, "/healthz") == (200, {"status": "ok"})
    assert answer(app, "/ready") == (200, {"status": "ready", "in_flight": 0})
    wait_for(lambda: '"msg": "request", "method": "GET", "path": "/hi"' in app.cli(
        "logs", "api", "--tail", "50").stdout, timeout=20, interval=0.3,
        message="the request's JSON log line")

    app.manifest.write_text(app.manifest.read_text().replace("hello from api", "hello again"))
    deployed = app.json("deploy")
    assert [c["release"] for c in deployed["changes"]] == [2], deployed
    rollout = app.json("rollout", "status", "api")
    assert rollout["strategy"] == "canary", rollout
    wait_for(lambda: answer(app, "/", **{"x-mso-route": "canary"})[1].get("message") == "hello again",
             timeout=60, message="the canary answering with the new config")
    assert answer(app, "/", **{"x-mso-route": "stable"})[1]["message"] == "hello from api"
    wait_for(lambda: app.json("rollout", "status", "api")["phase"] == "Promoted", timeout=180,
             interval=0.5, message="the canary promoted")
    wait_for(lambda: answer(app)[1].get("message") == "hello again" and app.all_ready(1),
             timeout=60, message="only the new release serving")

    # SIGTERM with a request in flight: the replica stops taking connections, finishes
    # the request, then exits (mso's own drain waits for requests before it signals, so
    # the signal is sent here by hand, once the app itself counts the request).
    (replica,) = app.replicas("api")
    host, port = replica["address"].rsplit(":", 1)
    slow: list[tuple[int, dict]] = []  # type: ignore[type-arg]
    thread = threading.Thread(target=lambda: slow.append(direct(host, int(port), "/?delay=3")))
    thread.start()
    wait_for(lambda: direct(host, int(port), "/ready")[1].get("in_flight") == 1, timeout=10,
             message="the slow request in flight")
    os.kill(replica["pid"], signal.SIGTERM)
    thread.join(30)
    assert slow and slow[0][0] == 200 and slow[0][1]["replica"] == replica["replica"], slow
    seen = [""]

    def drained() -> bool:
        logs = seen[0] = app.cli("logs", "api", "--tail", "200").stdout
        return ('"msg": "draining", "signal": "SIGTERM", "in_flight": 1' in logs
                and '"msg": "stopped"' in logs)
    try:
        wait_for(drained, timeout=20, interval=0.3,
                 message="the old replica's log: draining with the request in flight, stopped")
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{seen[0]}") from None
    wait_for(lambda: app.all_ready(1) and app.replicas("api")[0]["pid"] != replica["pid"],
             timeout=60, message="mso starting the replica again (restart: always)")

    app.cli("down")
    assert app.cli("ps").returncode == 0



@pytest.mark.parametrize("template", ["node-http", "worker"])
def test_other_templates_run_on_the_embedded_engine(app: MsoApp, template: str) -> None:
    if template == "node-http" and shutil.which("node") is None:
        pytest.skip("node is not installed (scripts/setup.sh installs nodejs for the tests)")
    app.manifest.write_text(f"app: paved\ngateway: {{port: {app.gateway_port}}}\n")
    app.cli("new", "service", "svc", "--template", template)
    app.up(timeout=120)
    if template == "node-http":
        status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(answer(app, "/x")),
                                timeout=30, message="svc through the gateway")
        assert body["message"] == "hello from svc" and body["path"] == "/x"
        assert answer(app, "/ready")[1] == {"status": "ready"}
        line = '"msg":"request"'
    else:
        line = '"msg": "task done"'
    wait_for(lambda: line in app.cli("logs", "svc", "--tail", "50").stdout, timeout=30,
             interval=0.3, message="the service's JSON log line")
    app.cli("down")
