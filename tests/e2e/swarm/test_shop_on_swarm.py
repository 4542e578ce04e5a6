"""The shop example on a real Swarm: page through the gateway, task kill, and `mso down`."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.swarm.conftest import (REPO, Load, app_copy, ensure_swarm, free_port, mso,
                                      mso_json, wait_for)

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(900)]


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                          timeout=120).stdout


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    ensure_swarm()
    port = free_port()
    manifest = app_copy(REPO / "examples" / "shop", tmp_path_factory.mktemp("swarm") / "shop",
                        port)
    # The shop's `watch:` keys are for `mso up --watch`: Swarm refuses them, --dev leaves
    # them out (issue 18)
    refused = mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent,
                  check=False)
    assert refused.returncode == 2 and "services.web.watch: not supported on swarm: " \
        "watch is a development key" in refused.stderr, refused.stderr
    mso("deploy", "--engine", "swarm", "--dev", "-f", str(manifest), cwd=manifest.parent)
    yield manifest, port
    mso("down", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent, check=False)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


def test_shop_page_through_the_gateway_shows_data_from_other_services(shop: Any) -> None:
    _, port = shop
    page = _get(f"http://127.0.0.1:{port}/")
    assert "Blue-green hoodie" in page        # inventory, seeded by the migrate job
    assert "approved" in page                  # payments
    assert "Recent orders" in page             # orders
    assert "served by web-" in page


def test_ps_and_endpoints_use_the_local_engine_shapes(shop: Any) -> None:
    manifest, port = shop
    ps = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    web = [r for r in ps["replicas"] if r["service"] == "web"]
    assert len(web) == 2 and all(r["state"] == "READY" and r["subset"] == "stable" for r in web)
    assert {"service", "replica", "release", "subset", "state", "pid", "address",
            "restarts"} <= set(web[0])
    eps = mso_json("endpoints", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    assert eps["gateway"] == f"127.0.0.1:{port}"
    assert eps["services"]["orders"]["address"].startswith("mso-gateway:")
    assert all(e["weight"] == 100 for e in eps["services"]["web"]["endpoints"])


def test_killed_task_is_replaced_with_no_failed_request(shop: Any) -> None:
    manifest, port = shop
    ps = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    victim = next(r for r in ps["replicas"] if r["service"] == "web")
    with Load(f"http://127.0.0.1:{port}/") as load:
        wait_for(lambda: load.ok > 20, 60, "traffic before the kill")
        _docker("kill", victim["container"])

        def replaced() -> bool:
            now = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
            web = [r for r in now["replicas"] if r["service"] == "web" and r["state"] == "READY"]
            return len(web) == 2 and victim["task"] not in {r["task"] for r in web}
        wait_for(replaced, 120, "a replacement task")
        before = load.ok
        wait_for(lambda: load.ok > before + 20, 60, "traffic after the replacement")
    assert load.failed == [], load.failed[:5]


def test_logs_come_from_the_docker_api(shop: Any) -> None:
    manifest, _ = shop
    out = mso("logs", "web", "--engine", "swarm", "--file", str(manifest), "-o", "json",
              cwd=manifest.parent).stdout
    assert "web listening" in out


def test_the_dashboard_shows_the_swarm_app(shop: Any) -> None:
    from tests.e2e.dashboard import RemoteDashboard, check_remote_dashboard
    from tests.e2e.swarm.conftest import MSO
    manifest, port = shop
    with RemoteDashboard([*MSO, "dashboard", "--no-open", "--engine", "swarm", "-f",
                          str(manifest)], cwd=str(manifest.parent)) as dash:
        check_remote_dashboard(
            dash, "web", {"web", "orders", "inventory", "payments"},
            lambda: [_get(f"http://127.0.0.1:{port}/healthz") for _ in range(5)])
    assert dash.proc.returncode == 0  # Ctrl-C ends it cleanly


def test_down_removes_only_what_mso_created(shop: Any) -> None:
    manifest, _ = shop
    _docker("service", "create", "--detach", "--name", "mso-test-unrelated",
            "--label", "mso.app=shop", "mso/base:unused" if False else _base_image(),
            "python3", "-c", "import time; time.sleep(3600)")
    _docker("network", "create", "-d", "overlay", "mso-test-unrelated-net")
    try:
        mso("down", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        services = _docker("service", "ls", "--format", "{{.Name}}").split()
        assert "mso-test-unrelated" in services
        assert not [s for s in services if s.startswith("shop_")]
        assert "mso-test-unrelated-net" in _docker("network", "ls", "--format", "{{.Name}}")
        for kind in ("network", "secret", "config"):
            left = _docker(kind, "ls", "--filter", "label=mso.managed=true", "--filter",
                           "label=mso.app=shop", "--format", "{{.Name}}").split()
            assert left == [], (kind, left)
    finally:
        subprocess.run(["docker", "service", "rm", "mso-test-unrelated"], check=False,
                       capture_output=True)
        subprocess.run(["docker", "network", "rm", "mso-test-unrelated-net"], check=False,
                       capture_output=True)


def _base_image() -> str:
    from mso.engines.images import ensure_base_image
    return ensure_base_image()


