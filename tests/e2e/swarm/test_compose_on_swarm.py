"""Issue 17 on Swarm: the compose app of tests/e2e/test_compose_containers.py (a `build:`
web service and Debian's redis-server in a locally built image), deployed unchanged from
its compose file: the web answers through the gateway, counting in the Redis, and a new
web image is a new release that answers without a failed request."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.compose_app import hits, write_compose_app
from tests.e2e.swarm.conftest import Load, free_port, mso, mso_json, wait_for

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(600)]


def _get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return None


def test_the_imported_compose_app_runs_on_swarm(swarm: None, tmp_path: Path) -> None:
    from mso.engines.images import ensure_base_image
    port = free_port()
    # a unique app name (the folder's): the Swarm is shared
    folder = tmp_path / f"composeswarm{os.getpid()}"
    compose = write_compose_app(folder, ensure_base_image(), port)
    run: Any = lambda *a, **k: mso(*a, "--engine", "swarm", "-f", str(compose),  # noqa: E731
                                   cwd=folder, **k)
    try:
        run("deploy", timeout=600)
        first = wait_for(lambda: _get(port), 180, "web through the gateway")
        count, version = hits(first)
        assert version == "v1"
        assert hits(_get(port) or "")[0] > count  # one Redis behind both replicas
        (folder / "web" / "VERSION").write_text("v2\n")
        with Load(f"http://127.0.0.1:{port}/", threads=2) as load:
            wait_for(lambda: load.ok > 10, 60, "traffic")
            result = mso_json("deploy", "--engine", "swarm", "-f", str(compose), cwd=folder)
            assert [(c["service"], c["release"]) for c in result["changes"]
                    if c["created"]] == [("web", 2)], result
            wait_for(lambda: any(b.endswith(b" v2") for b in load.bodies[-20:]), 240,
                     "v2 answering")
        assert load.failed == [], load.failed[:5]
        ps = mso_json("ps", "--engine", "swarm", "-f", str(compose), cwd=folder)
        assert {(r["service"], r["release"]) for r in ps["replicas"]} == {
            ("web", 2), ("redis", 1)}, ps
    finally:
        run("down", check=False)
