"""Multi-node: with 2 lab workers, tasks spread over the nodes and cross-node calls work."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mso.engines.images import app_image, ensure_gateway_image
from mso.spec.load import load_manifest
from tests.e2e.swarm.conftest import REPO, ensure_swarm, mso, mso_json, wait_for

pytestmark = [pytest.mark.swarm, pytest.mark.slow, pytest.mark.timeout(900)]

LAB = REPO / "scripts" / "swarm-lab.sh"
ECHO = Path(__file__).with_name("echoapp")


@pytest.fixture
def lab() -> Iterator[None]:
    ensure_swarm()
    subprocess.run(["sh", str(LAB), "up", "2"], check=True, timeout=300)
    yield
    subprocess.run(["sh", str(LAB), "down"], check=False, timeout=300)


def test_tasks_spread_over_nodes_and_calls_cross_them(lab: None, deployed: Any) -> None:
    manifest, port = deployed(ECHO, "multi")
    manifest.write_text(manifest.read_text().replace("replicas: 2", "replicas: 6"))
    loaded = load_manifest(manifest)
    app_image(loaded)
    ensure_gateway_image(proxy_only=True)
    subprocess.run(["sh", str(LAB), "images"], check=True, timeout=300)
    mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    ps = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    nodes = {r["node"] for r in ps["replicas"] if r["state"] == "READY"}
    assert len(nodes) >= 2, ps
    seen: set[str] = set()

    def answered_by_all() -> bool:
        for _ in range(30):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                seen.add(r.read().decode().split()[1])
        return len(seen) == 6
    wait_for(answered_by_all, 60, "answers from every replica on every node")
