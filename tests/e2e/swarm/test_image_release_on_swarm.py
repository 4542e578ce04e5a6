"""New code with an unchanged manifest on a real Swarm: a new numbered release, which a
rollback undoes and a redeploy of the same code does not bring back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.swarm.conftest import mso, mso_json, wait_for
from tests.e2e.swarm.test_canary_on_swarm import ECHO
from tests.e2e.swarm.test_control_on_swarm import _version

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(600)]


def _own_app(manifest: Path) -> None:
    text = manifest.read_text().replace("app: echo\n", "app: echoimg\n", 1)
    start = text.index("    rollout:")
    manifest.write_text(text[:start] + "    rollout: {strategy: rolling}\n")


def test_new_code_is_a_new_release_and_rollback_sticks(deployed: Any) -> None:
    manifest, port = deployed(ECHO, "image")
    _own_app(manifest)
    run = manifest.parent
    mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=run)
    assert _version(port) == "1"
    code = manifest.parent / "echo.py"
    code.write_text(code.read_text().replace("body = f\"{os.environ", "body = f\"new{os.environ"))
    result = mso_json("deploy", "--engine", "swarm", "-f", str(manifest), cwd=run)
    assert [(c["release"], c["created"]) for c in result["changes"]] == [(2, True)]
    assert result["changes"][0]["change"].startswith("new image ")
    wait_for(lambda: _version(port) == "new1", 120, "the new code to answer")
    mso("rollback", "echo", "--engine", "swarm", "-f", str(manifest), cwd=run)
    wait_for(lambda: {_version(port) for _ in range(6)} == {"1"}, 180, "the old code back")
    again = mso_json("deploy", "--engine", "swarm", "-f", str(manifest), cwd=run)
    assert [c["created"] for c in again["changes"]] == [False]
    assert {_version(port) for _ in range(6)} == {"1"}
    releases = mso_json("releases", "echo", "--engine", "swarm", "-f", str(manifest), cwd=run)
    assert [r["number"] for r in releases] == [1, 2, 3]
    assert releases[-1]["current"] and releases[-1]["change"] == "rollback to release 1"
