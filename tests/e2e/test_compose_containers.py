"""Issue 17's end-to-end test on the embedded engine: a compose app made of a `build:` web
service and a Redis (Debian's redis-server, in an image built here: no registry is
reachable) runs with `mso up compose.yaml` as containers, and `mso deploy` of a new web
image under load fails no request. The web service counts its hits in Redis through
`REDIS_HOST`/`REDIS_PORT` (the proxy's stable address, from inside a container)."""

from __future__ import annotations

import pytest

from tests.e2e.compose_app import write_compose_app
from tests.e2e.harness import MsoApp, wait_for
from tests.e2e.load import Load
from tests.e2e.test_containers import _containers, base_image  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(300)]


def test_compose_web_and_redis_as_containers_deploy_without_loss(
        app: MsoApp, base_image: str) -> None:  # noqa: F811
    app.manifest = write_compose_app(app.folder, base_image, app.gateway_port)

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
