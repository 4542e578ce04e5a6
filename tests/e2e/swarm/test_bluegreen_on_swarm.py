"""Blue/green on a real Swarm, under real traffic through the gateway: the preview answers
on its own published port, promotion and abort switch all traffic with 0 failed requests,
and neither restarts a task."""

from __future__ import annotations

import subprocess
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.swarm.conftest import Load, free_port, mso, mso_json, wait_for

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(600)]

ECHO = Path(__file__).with_name("echoapp")
APP = "bluegreen"


def _blue_green(manifest: Path, preview_port: int, keep_previous: str) -> None:
    text = manifest.read_text().replace("app: echo", f"app: {APP}")
    head, _, _ = text.partition("    rollout:")
    manifest.write_text(head + "    rollout:\n      strategy: blue_green\n"
                        f"      preview_port: {preview_port}\n"
                        f"      keep_previous: {keep_previous}\n"
                        "      progress_deadline: 5m\n")


def _set_version(manifest: Path, version: str) -> None:
    text = manifest.read_text()
    manifest.write_text(text.replace('VERSION: "1"', f'VERSION: "{version}"'))


def _versions(port: int, n: int = 12) -> Counter[str]:
    """Which release answered each of n GETs (the echo app answers `VERSION replica`)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                seen[r.read().decode().split()[0]] += 1
        except Exception as exc:
            seen[type(exc).__name__] += 1
    return seen


def _status(manifest: Path) -> dict[str, Any]:
    data: dict[str, Any] = mso_json("rollout", "status", "echo", "--engine", "swarm",
                                    "-f", str(manifest), cwd=manifest.parent)
    return data


def _tasks() -> dict[str, set[str]]:
    """Running task IDs of each of this app's Swarm services."""
    out: dict[str, set[str]] = {}
    for name in (f"{APP}_echo", f"{APP}_echo-canary"):
        proc = subprocess.run(["docker", "service", "ps", name, "-q", "--filter",
                               "desired-state=running"], capture_output=True, text=True,
                              check=False)
        if proc.returncode == 0:
            out[name] = set(proc.stdout.split())
    return out


def _services() -> list[str]:
    return subprocess.run(["docker", "service", "ls", "--format", "{{.Name}}"],
                          capture_output=True, text=True, check=True).stdout.split()


def _deploy_preview(deployed: Any, name: str, keep_previous: str) -> tuple[Path, int, int]:
    """v1 live, v2 deployed as a ready preview; returns (manifest, gateway, preview port)."""
    manifest, port = deployed(ECHO, name)
    preview = free_port()
    _blue_green(manifest, preview, keep_previous)
    mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    _set_version(manifest, "2")
    mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    wait_for(lambda: _status(manifest)["phase"] == "Paused", 180, "a ready preview")
    wait_for(lambda: set(_versions(preview, 4)) == {"2"}, 60, "the preview port to answer v2")
    # The preview went straight into the second service: the controller never acted on
    # release 2 before its blue/green rollout began (no stand-in handoff of release 1).
    changes = [e["message"] for e in mso_json("events", "--engine", "swarm", "--file",
                                              str(manifest), cwd=manifest.parent)
               if e["type"] in ("swarm.created", "swarm.updated")]
    assert changes[-1:] == [f"created {APP}_echo-canary: release 2, 2 replicas, subset preview"], \
        changes
    assert set(_versions(port)) == {"1"}  # the main port still answers v1 alone
    return manifest, port, preview


def _promote(manifest: Path, port: int) -> None:
    """Promote the v2 preview and wait until the main port answers v2 alone."""
    mso("rollout", "promote", "echo", "--engine", "swarm", "-f", str(manifest),
        cwd=manifest.parent)
    wait_for(lambda: set(_versions(port, 6)) == {"2"}, 30, "all traffic on v2")


def test_preview_then_promotion_switches_all_traffic_without_failures(deployed: Any) -> None:
    manifest, port, preview = _deploy_preview(deployed, "promote", "20s")
    assert set(_versions(preview)) == {"2"}
    before = _tasks()
    with Load(f"http://127.0.0.1:{port}/", threads=3) as load:
        wait_for(lambda: load.ok > 20, 60, "traffic")
        _promote(manifest, port)
        assert _tasks() == before  # the switch restarted no task: v1 waits as previous
        wait_for(lambda: _status(manifest)["phase"] == "Promoted", 120, "keep_previous to end")
        wait_for(lambda: f"{APP}_echo-canary" not in _services(), 180,
                 "v2 moved into the main service and the second service removed")
        assert set(_versions(port)) == {"2"}
    assert load.failed == [], load.failed[:5]
    assert load.ok > 100
    ps = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    assert {(r["release"], r["subset"]) for r in ps["replicas"]} == {(2, "stable")}
    trail = [(e["type"], e["message"]) for e in mso_json(
        "events", "--engine", "swarm", "--file", str(manifest), cwd=manifest.parent)]
    assert ("rollout.paused", "preview ready, waiting for promotion") in trail
    assert ("swarm.updated", f"updated {APP}_echo: release 1, 2 replicas, subset previous") \
        in trail


def test_abort_after_promotion_switches_back_to_the_previous_release(deployed: Any) -> None:
    manifest, port, _ = _deploy_preview(deployed, "abort", "5m")
    with Load(f"http://127.0.0.1:{port}/", threads=3) as load:
        wait_for(lambda: load.ok > 20, 60, "traffic")
        _promote(manifest, port)
        before = _tasks()
        ok_at_promotion = load.ok
        wait_for(lambda: load.ok > ok_at_promotion + 20, 60, "traffic on v2")
        mso("rollout", "abort", "echo", "--engine", "swarm", "-f", str(manifest),
            cwd=manifest.parent)
        wait_for(lambda: set(_versions(port, 6)) == {"1"}, 30, "all traffic back on v1")
        assert _tasks()[f"{APP}_echo"] == before[f"{APP}_echo"]  # v1 never restarted
        wait_for(lambda: f"{APP}_echo-canary" not in _services(), 120,
                 "the v2 service drained and removed")
        assert set(_versions(port)) == {"1"}
    assert load.failed == [], load.failed[:5]
    assert _status(manifest)["phase"] == "RolledBack"
    releases = mso_json("releases", "echo", "--engine", "swarm", "-f", str(manifest),
                        cwd=manifest.parent)
    assert [r["outcome"] for r in releases][-1] == "rolled back"


def test_a_deploy_while_the_previous_release_is_kept_hands_over_without_failures(
        deployed: Any) -> None:
    # v2 is promoted and v1 kept as `previous` (the swap: v2 serves from the second
    # service). Deploying v3 then must move v2 back into the main service (drained first)
    # before v3's preview takes the second service: the main port never answers v1 or v3.
    manifest, port, preview = _deploy_preview(deployed, "redeploy", "5m")
    with Load(f"http://127.0.0.1:{port}/", threads=3) as load:
        wait_for(lambda: load.ok > 20, 60, "traffic")
        _promote(manifest, port)
        promoted_at = len(load.bodies)
        wait_for(lambda: load.ok > promoted_at + 20, 60, "traffic on v2")
        text = manifest.read_text()
        manifest.write_text(text.replace('VERSION: "2"', 'VERSION: "3"'))
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        wait_for(lambda: _status(manifest)["phase"] == "Paused", 240, "a ready v3 preview")
        wait_for(lambda: set(_versions(preview, 4)) == {"3"}, 60, "the preview port on v3")
        assert set(_versions(port)) == {"2"}
        after_deploy = len(load.bodies)
        wait_for(lambda: load.ok > after_deploy + 20, 60, "more traffic")
    assert load.failed == [], load.failed[:5]
    answered = Counter(b.split()[0].decode() for b in load.bodies[promoted_at:])
    assert set(answered) == {"2"}, answered

    def placed() -> set[tuple[int, str]]:
        ps = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        return {(r["release"], r["subset"]) for r in ps["replicas"]}

    # the second service's v2 tasks may still be shutting down after the v3 update
    wait_for(lambda: placed() == {(2, "stable"), (3, "preview")}, 60,
             "v2 in the main service and v3 in the second, nothing else")
