"""Containers on the embedded engine, against the machine's real dockerd (issue 17 part 2).

A service with `build:` and no `run:` runs as one container per replica (as `user:`
65534, its secret, config and data folders handed to that uid) beside a process
service: it answers through mso's gateway, a rebuilt image rolls out under load without a
failed request, a `kill -9` of the daemon then `mso up` re-adopts the same containers (no
duplicate), and `mso down` leaves no container. One app serves every assertion (each
step leaves it as the next one needs it), so the whole test takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import MsoApp, wait_for
from tests.e2e.load import Load

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]

APP = Path(__file__).resolve().parent / "apps" / "container"
SECRET = "planted-container-secret-4c1d"


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.fixture(scope="module")
def base_image() -> str:
    if shutil.which("docker") is None or _docker("info").returncode != 0:
        from tests.e2e.swarm.conftest import ensure_swarm
        ensure_swarm()  # starts dockerd (the shared one) when it is not running
    from mso.engines.images import ensure_base_image
    return str(ensure_base_image())


def _containers(instance: str) -> dict[str, str]:
    """Running or not: container id -> replica, for this app's instance."""
    out = _docker("ps", "--all", "--no-trunc", "--filter", f"label=io.mso.instance={instance}",
                  "--format", "{{.ID}} {{.Label \"io.mso.replica\"}}").stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def _write_app(app: MsoApp, base: str) -> None:
    web = app.folder / "web"
    shutil.copytree(APP, web)
    (web / "VERSION").write_text("v1\n")
    (app.folder / "token").write_text(SECRET)
    (app.folder / "web.conf").write_text("greeting=hello\n")
    app.write(f"""
app: ctr-e2e
gateway: {{port: GATEWAY_PORT}}
routes:
  - {{path: /plain, service: plain}}
  - {{path: /, service: web}}
services:
  web:
    build: {{context: ./web, args: {{BASE: "{base}"}}}}
    replicas: 2
    ports: {{http: 8000}}
    secrets: {{token: {{file: ./token}}}}
    config: [{{source: ./web.conf, target: web.conf}}]
    resources: {{cpu: 0.5, memory: 128Mi}}
    stop: {{grace: 5s}}
    user: "65534"
    depends_on: {{plain: started}}
    health:
      readiness: {{http: /, period: 200ms}}
      liveness: {{exec: [python3, -c, "import os; os.stat('/srv/web.py')"], period: 1s}}
    rollout: {{strategy: rolling, max_surge: 1, max_unavailable: 0}}
  plain:
    run: "exec PYTHON -m http.server --bind 127.0.0.1 $PORT"
    shell: true
    ports: {{http: 8000}}
""")


def test_build_service_runs_as_containers_beside_a_process(app: MsoApp, base_image: str) -> None:
    _write_app(app, base_image)
    app.up()
    instance = app.instance or ""
    wait_for(lambda: app.all_ready(3), message="2 containers and 1 process READY")

    # Through the gateway, beside a process service.
    status, body = app.get("/")
    assert status == 200 and body.endswith(" v1"), body
    assert app.get("/plain/")[0] in (200, 404)
    assert app.get("/config")[1] == "greeting=hello\n"  # config: mounted read-only
    assert app.get("/dep") == (200, "plain answered 200")  # PLAIN_URL works in a container
    first = _containers(instance)
    assert sorted(first.values()) == ["web-1", "web-2"]

    # Labels, limits, stop settings; the secret is a file, never in env or on a command line.
    cid = next(iter(first))
    info = json.loads(_docker("inspect", cid).stdout)[0]
    labels = info["Config"]["Labels"]
    assert labels["io.mso.app"] == "ctr-e2e" and labels["io.mso.service"] == "web"
    assert labels["io.mso.release"] == "1" and len(labels["io.mso.spec-hash"]) == 64
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["Memory"] == 128 * 1024 * 1024
    assert info["Config"]["StopSignal"] == "SIGTERM" and info["Config"]["StopTimeout"] == 5
    # `user:` is the container's user, and its secret and config files (read above and
    # below) were handed to it: the bind-mounted folders are its own.
    assert info["Config"]["User"] == "65534:65534"
    assert (app.folder / ".mso" / "data" / "web").stat().st_uid == 65534
    assert SECRET not in json.dumps(info)
    for replica in app.replicas("web"):
        assert SECRET.encode() not in Path(f"/proc/{replica['pid']}/cmdline").read_bytes()
    logs = app.cli("logs", "web", "--tail", "50").stdout
    assert "secret token: %d bytes" % len(SECRET) in logs and "listening on 8000" in logs

    # `mso run` of a container service runs in a new container of its image.
    ran = app.cli("run", "web", "--", "python3", "-c",
                  "import os; print(os.environ['MSO_SECRETS'], open('/srv/VERSION').read())")
    assert "/run/secrets v1" in ran.stdout, ran.stdout
    wait_for(lambda: sorted(_containers(instance).values()) == ["web-1", "web-2"],
             message="the one-off's container removed (--rm)")

    # A rebuilt image (same manifest) is a new release, rolled out under load: 0 failures.
    (app.folder / "web" / "VERSION").write_text("v2\n")
    with Load(app.gateway_port, rate=100) as load:
        app.cli("deploy", timeout=240)
        wait_for(lambda: all(r["release"] == 2 and r["state"] == "READY"
                             for r in app.replicas("web")) and len(app.replicas("web")) == 2,
                 timeout=120, message="release 2 rolled out")
    result = load.stop()
    assert result.failures == [], result.failures[:5]
    assert result.ok > 50 and any(b.endswith(" v2") for b in result.bodies), result.bodies
    assert app.get("/")[1].endswith(" v2")
    wait_for(lambda: len(_containers(instance)) == 2, message="the old containers removed")
    rolled = _containers(instance)
    assert not set(rolled) & set(first)  # new containers

    # kill -9 of the daemon, then `mso up`: the same containers, no duplicate; a container
    # of a replica that no longer exists (left by the crash) is removed.
    os.kill(app.status()["pid"], signal.SIGKILL)
    assert app.get("/")[0] == 200  # the proxy and the containers keep serving
    stray = _docker("run", "-d", "--label", f"io.mso.instance={instance}", "--label",
                    "io.mso.replica=web-99", base_image, "python3", "-c",
                    "import time; time.sleep(600)").stdout.strip()
    assert stray, "the stray container did not start"
    app.cli("up", "-d")
    wait_for(lambda: app.all_ready(3), message="re-adopted replicas READY")
    assert _containers(instance) == rolled
    assert any(e["type"] == "replica.adopted" for e in app.events())

    # A container killed behind mso's back is restarted (a new container, same name).
    victim = app.replicas("web")[0]
    name = victim["replica"]
    _docker("kill", f"mso-{instance}-{name}")
    wait_for(lambda: any(r["replica"] == name and r["restarts"] >= 1 and r["state"] == "READY"
                         for r in app.replicas("web")), timeout=60, message=f"{name} restarted")
    assert victim["pid"] != next(r for r in app.replicas("web") if r["replica"] == name)["pid"]
    assert sorted(_containers(instance).values()) == sorted(rolled.values())

    # mso down: no container left.
    app.cli("down")
    assert _containers(instance) == {}
