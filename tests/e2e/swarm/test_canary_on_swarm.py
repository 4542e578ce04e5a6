"""Canaries on a real Swarm, under real traffic through the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mso.store.db import Store
from tests.e2e.swarm.conftest import Load, mso, mso_json, wait_for
from tests.e2e.swarm.gateway_kill import gateway_container

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(600)]

ECHO = Path(__file__).with_name("echoapp")


def _set_env(manifest: Path, key: str, value: str) -> None:
    lines = manifest.read_text().splitlines()
    out = [f'      {key}: "{value}"' if line.strip().startswith(f"{key}:") else line
           for line in lines]
    manifest.write_text("\n".join(out) + "\n")


def _status(manifest: Path) -> dict[str, Any]:
    data: dict[str, Any] = mso_json("rollout", "status", "echo", "--engine", "swarm",
                                    "-f", str(manifest), cwd=manifest.parent)
    return data


def _services() -> list[str]:
    import subprocess
    return subprocess.run(["docker", "service", "ls", "--format", "{{.Name}}"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_healthy_canary_is_promoted_without_failed_requests(deployed: Any) -> None:
    manifest, port = deployed(ECHO, "healthy")
    mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    gateway = gateway_container("echo")
    _set_env(manifest, "VERSION", "2")
    with Load(f"http://127.0.0.1:{port}/", threads=3) as load:
        wait_for(lambda: load.ok > 20, 60, "traffic")
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        wait_for(lambda: _status(manifest)["phase"] == "Promoted", 240, "promotion")
        wait_for(lambda: "echo_echo-canary" not in _services(), 60, "canary removal")
    # The gateway task was not replaced: its image changes only with the proxy's code (a
    # replaced gateway resets every connection while its single task restarts).
    assert gateway_container("echo") == gateway
    assert load.failed == [], load.failed[:5]
    ps = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    assert {r["release"] for r in ps["replicas"]} == {2}


def test_erroring_canary_is_rolled_back_with_the_numbers(deployed: Any) -> None:
    manifest, port = deployed(ECHO, "bad")
    mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    _set_env(manifest, "ERROR_RATE", "0.5")
    with Load(f"http://127.0.0.1:{port}/", threads=3) as load:
        wait_for(lambda: load.ok > 20, 60, "traffic")
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        status = wait_for(lambda: (s := _status(manifest))["phase"] == "RolledBack" and s,
                          240, "automatic rollback")
        wait_for(lambda: "echo_echo-canary" not in _services(), 60, "canary removal")
    assert status["analysis"]["canary"]["errors"] > 0
    store = Store(manifest.parent / ".mso" / "swarm.db")
    failed = [e for e in store.events(service="echo") if e.type == "analysis.fail"]
    assert failed and failed[-1].data["canary"]["errors"] > 0
    assert failed[-1].data["stable"]["requests"] > 0
    trail = mso_json("events", "--engine", "swarm", "--file", str(manifest), "--service",
                     "echo", cwd=manifest.parent)  # the same trail through the CLI
    verdicts = [e for e in trail if e["type"] == "analysis.fail"]
    assert verdicts and verdicts[-1]["data"]["canary"]["errors"] > 0
    assert any(e["type"] == "rollout.rolledback" for e in trail)
    releases = mso_json("releases", "echo", "--engine", "swarm", "-f", str(manifest),
                        cwd=manifest.parent)
    assert releases[-1]["outcome"] == "rolled back"
    ps = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    assert {r["release"] for r in ps["replicas"]} == {1}
