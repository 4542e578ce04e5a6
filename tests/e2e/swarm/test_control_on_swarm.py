"""Status and control on a real Swarm: scale, releases and rollback to an older release."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.swarm.conftest import mso, mso_json, wait_for
from tests.e2e.swarm.test_canary_on_swarm import ECHO, _set_env, _status

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(600)]


def _rolling(manifest: Path) -> None:
    """A plain rolling update, so each release goes out without an analysis step, under an
    app name of its own, so nothing left of the canary tests' `echo` app can interfere."""
    text = manifest.read_text().replace("app: echo\n", "app: echoctl\n", 1)
    start = text.index("    rollout:")
    manifest.write_text(text[:start] + "    rollout: {strategy: rolling}\n")


def _version(port: int) -> str:
    """The echo app answers "<VERSION> <replica>"."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
        return response.read().decode().split()[0]


def _replicas(manifest: Path) -> list[dict[str, Any]]:
    ps: dict[str, Any] = mso_json("ps", "--engine", "swarm", "-f", str(manifest),
                                  cwd=manifest.parent)
    return [r for r in ps["replicas"] if r["service"] == "echo"]


def test_scale_releases_and_rollback_to_an_older_release(deployed: Any) -> None:
    manifest, port = deployed(ECHO, "control")
    _rolling(manifest)
    run = {"cwd": manifest.parent}
    mso("deploy", "--engine", "swarm", "-f", str(manifest), **run)
    mso("scale", "echo=3", "--engine", "swarm", "-f", str(manifest), **run)
    wait_for(lambda: len([r for r in _replicas(manifest) if r["state"] == "READY"]) == 3,
             180, "3 READY tasks")
    for version in ("2", "3"):
        _set_env(manifest, "VERSION", version)
        mso("deploy", "--engine", "swarm", "-f", str(manifest), **run)
        wait_for(lambda: _status(manifest)["phase"] == "Promoted", 240, f"release {version}")
    releases = mso_json("releases", "echo", "--engine", "swarm", "-f", str(manifest), **run)
    assert [r["number"] for r in releases] == [1, 2, 3]
    mso("rollback", "echo", "--to", "1", "--engine", "swarm", "-f", str(manifest), **run)
    wait_for(lambda: _status(manifest)["phase"] == "Promoted"
             and {r["release"] for r in _replicas(manifest)} == {4}, 240, "rollback deployed")
    assert {_version(port) for _ in range(6)} == {"1"}
    releases = mso_json("releases", "echo", "--engine", "swarm", "-f", str(manifest), **run)
    assert releases[-1]["number"] == 4 and "rollback to release 1" in releases[-1]["change"]
    # The scale survived the releases (once the handoff's stand-in service is retired).
    wait_for(lambda: [r["subset"] for r in _replicas(manifest)] == ["stable"] * 3, 120,
             "3 stable tasks and no stand-in")
