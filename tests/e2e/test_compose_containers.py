"""Issue 17's end-to-end test on the embedded engine: a compose app made of a `build:` web
service and a Redis (Debian's redis-server, in an image built here: no registry is
reachable) runs with `mso up compose.yaml` as containers, and `mso deploy` of a new web
image under load fails no request. The web service counts its hits in Redis through
`REDIS_HOST`/`REDIS_PORT` (the proxy's stable address, from inside a container)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import MsoApp, wait_for
from tests.e2e.load import Load
from tests.e2e.test_containers import _containers, base_image  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]

APP = Path(__file__).resolve().parent / "apps" / "compose_redis"


def _redis_context(folder: Path) -> None:
    """Debian's redis-server and redis-cli with the libraries they link."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        pytest.fail("redis-server/redis-tools are not installed (scripts/setup.sh installs "
                    "them with the test extras)")
    (folder / "bin").mkdir()
    (folder / "lib").mkdir()
    # redis-server is a link to redis-check-rdb, which picks its role from its name
    shutil.copy(Path(server).resolve(), folder / "bin" / "redis-server")
    shutil.copy(cli, folder / "bin" / "redis-cli")
    out = subprocess.run(["ldd", server, cli], capture_output=True, text=True, check=True).stdout
    for lib in {p.split()[2] for p in out.splitlines() if "=> /" in p}:
        shutil.copy(Path(lib).resolve(), folder / "lib" / Path(lib).name)


def test_compose_web_and_redis_as_containers_deploy_without_loss(
        app: MsoApp, base_image: str) -> None:  # noqa: F811
    shutil.copytree(APP, app.folder, dirs_exist_ok=True)
    (app.folder / "web" / "VERSION").write_text("v1\n")
    _redis_context(app.folder / "redis")
    (app.folder / ".env").write_text(f"BASE={base_image}\nGATEWAY_PORT={app.gateway_port}\n")
    app.manifest = app.folder / "compose.yaml"

    app.cli("up", "-d", "compose.yaml", "--timeout", "120")
    app.instance = app.status()["instance"]
    wait_for(lambda: app.all_ready(3), message="redis and 2 web containers READY")
    assert sorted(_containers(app.instance).values()) == ["redis-1", "web-1", "web-2"]
    first = int(app.get("/")[1].split()[1])
    assert app.get("/")[1] == f"hits {first + 1} v1"  # through Redis, from a container

    (app.folder / "web" / "VERSION").write_text("v2\n")
    with Load(app.gateway_port, rate=100) as load:
        deploy = app.cli("deploy", "-f", "compose.yaml", "--wait", "--timeout", "180",
                         timeout=240)
        wait_for(lambda: load.result.bodies and any(b.endswith(" v2")
                                                    for b in load.result.bodies),
                 message="v2 answering")
    result = load.stop()
    assert "web: release 2" in deploy.stdout, deploy.stdout
    assert result.failures == [], result.failures[:5]
    assert result.ok > 50
    wait_for(lambda: [r["release"] for r in app.replicas("web")] == [2, 2],
             message="only release 2 left (the old replicas stopped)")
    assert app.replicas("redis")[0]["release"] == 1  # unchanged: not redeployed
    hits = int(app.get("/")[1].split()[1])
    assert hits > first + result.ok  # one Redis counted every request, across the deploy

    app.cli("down")
    assert _containers(app.instance) == {}
