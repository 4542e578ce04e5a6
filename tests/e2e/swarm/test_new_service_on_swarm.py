"""`mso new service` on a real Swarm (issue 18): the python-http service, unchanged, is
deployed, answers through the gateway with its probes, and a changed config rolls out as
a canary to promotion under traffic without failed requests."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.paved import paved_app, set_greeting
from tests.e2e.swarm.conftest import Load, free_port, mso, mso_json, wait_for

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(900)]


@pytest.fixture
def manifest(swarm: None, tmp_path: Path) -> Iterator[Path]:
    path = paved_app(tmp_path / "paved", "paved", free_port())
    try:
        yield path
    finally:
        mso("down", "--engine", "swarm", "-f", str(path), cwd=path.parent, check=False)


def get(port: int, path: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return dict(json.loads(r.read()))


def test_new_service_deploys_on_swarm(manifest: Path) -> None:
    port = int(manifest.read_text().split("port: ")[1].split("}")[0])
    mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent, timeout=800)
    wait_for(lambda: get(port, "/hi").get("message") == "hello from api", 120, "api answering")
    assert get(port, "/healthz") == {"status": "ok"}
    assert get(port, "/ready")["status"] == "ready"
    set_greeting(manifest, "hello again")
    with Load(f"http://127.0.0.1:{port}/", threads=2) as load:
        wait_for(lambda: load.ok > 10, 60, "traffic")
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent, timeout=800)
        status = mso_json("rollout", "status", "api", "--engine", "swarm", "-f", str(manifest),
                          cwd=manifest.parent)
        assert status["strategy"] == "canary", status
        wait_for(lambda: mso_json("rollout", "status", "api", "--engine", "swarm", "-f",
                                  str(manifest), cwd=manifest.parent)["phase"] == "Promoted",
                 300, "the canary promoted")
    assert load.failed == [], load.failed[:5]
    messages = {json.loads(b)["message"] for b in load.bodies}
    assert messages == {"hello from api", "hello again"}, messages  # both ran side by side
    wait_for(lambda: get(port, "/").get("message") == "hello again", 120, "the new config")
