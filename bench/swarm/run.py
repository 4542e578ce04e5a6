"""Swarm engine figures: deploy time (warm image cache), canary rollback time, failed
requests during a canary promotion vs Swarm's own rolling update of the same change, and
blue/green switch times with the failed requests of a promotion and an abort.

    .venv/bin/python bench/swarm/run.py [--rounds N] [--parts deploy,rollback,update,bluegreen]

Needs a running single-node Swarm (see scripts/swarm-lab.sh). Prints a markdown table.
The "Swarm rolling update" row runs the same change with `strategy: recreate`, which mso
maps to Swarm's own start-first rolling update with the gateway following the tasks:
the same gateway and the same load, only the update mechanism differs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.e2e.swarm.conftest import (Load, app_copy, ensure_swarm, free_port,  # noqa: E402
                                      mso, mso_json, wait_for)
from tests.e2e.swarm.test_bluegreen_on_swarm import _blue_green, _versions  # noqa: E402

ECHO = REPO / "tests" / "e2e" / "swarm" / "echoapp"


def _set(manifest: Path, old: str, new: str) -> None:
    manifest.write_text(manifest.read_text().replace(old, new))


def _down(manifest: Path) -> None:
    mso("down", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent, check=False)


def deploy_shop(work: Path) -> float:
    manifest = app_copy(REPO / "examples" / "shop", work / "shop", free_port())
    try:
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)  # warm
        _down(manifest)
        started = time.monotonic()
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        return time.monotonic() - started
    finally:
        _down(manifest)


def _status(manifest: Path) -> str:
    return str(mso_json("rollout", "status", "echo", "--engine", "swarm", "-f",
                        str(manifest), cwd=manifest.parent)["phase"])


def canary_rollback(work: Path, name: str) -> float:
    port = free_port()
    manifest = app_copy(ECHO, work / name, port)
    try:
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        _set(manifest, 'ERROR_RATE: "0"', 'ERROR_RATE: "0.5"')
        with Load(f"http://127.0.0.1:{port}/", threads=3):
            started = time.monotonic()
            mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
            wait_for(lambda: _status(manifest) == "RolledBack", 300, "rollback", 0.2)
            return time.monotonic() - started
    finally:
        _down(manifest)


def update_under_load(work: Path, name: str, strategy: str) -> tuple[int, int]:
    port = free_port()
    manifest = app_copy(ECHO, work / name, port)
    if strategy == "recreate":
        text = manifest.read_text()
        manifest.write_text(text[:text.index("    rollout:")] + "    rollout: {strategy: recreate}\n")
    try:
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        _set(manifest, 'VERSION: "1"', 'VERSION: "2"')
        with Load(f"http://127.0.0.1:{port}/", threads=3) as load:
            wait_for(lambda: load.ok > 50, 60, "traffic")
            mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
            if strategy == "canary":
                wait_for(lambda: _status(manifest) == "Promoted", 300, "promotion")

            def all_v2() -> bool:
                ps = mso_json("ps", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
                return {r["release"] for r in ps["replicas"]} == {2} and \
                    all(r["state"] == "READY" for r in ps["replicas"])
            wait_for(all_v2, 300, "release 2 everywhere")
            time.sleep(2)
        return len(load.failed), load.ok + len(load.failed)
    finally:
        _down(manifest)


def bluegreen(work: Path, name: str) -> tuple[float, float, int, int]:
    """Seconds from `rollout promote` to every GET answering v2, from `rollout abort` to
    every GET answering v1 again, and failed requests over both switches under load."""
    port = free_port()
    manifest = app_copy(ECHO, work / name, port)
    _blue_green(manifest, free_port(), "10m")
    run = manifest.parent
    try:
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=run)
        _set(manifest, 'VERSION: "1"', 'VERSION: "2"')
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=run)
        wait_for(lambda: _status(manifest) == "Paused", 300, "a ready preview")
        with Load(f"http://127.0.0.1:{port}/", threads=3) as load:
            wait_for(lambda: load.ok > 50, 60, "traffic")
            started = time.monotonic()
            mso("rollout", "promote", "echo", "--engine", "swarm", "-f", str(manifest), cwd=run)
            wait_for(lambda: set(_versions(port, 6)) == {"2"}, 60, "v2 everywhere", 0.1)
            switch = time.monotonic() - started
            time.sleep(3)  # traffic on v2 before switching back
            started = time.monotonic()
            mso("rollout", "abort", "echo", "--engine", "swarm", "-f", str(manifest), cwd=run)
            wait_for(lambda: set(_versions(port, 6)) == {"1"}, 60, "v1 everywhere", 0.1)
            back = time.monotonic() - started
            time.sleep(3)
        return switch, back, len(load.failed), load.ok + len(load.failed)
    finally:
        _down(manifest)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--parts", default="deploy,rollback,update,bluegreen")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    ensure_swarm()
    work = Path(tempfile.mkdtemp(prefix="mso-bench-swarm-"))
    rounds = range(args.rounds)
    try:
        deploys = [deploy_shop(work / f"d{i}") for i in rounds if "deploy" in parts]
        rollbacks = [canary_rollback(work, f"rb{i}") for i in rounds if "rollback" in parts]
        canary = [update_under_load(work, f"c{i}", "canary") for i in rounds if "update" in parts]
        plain = [update_under_load(work, f"p{i}", "recreate") for i in rounds if "update" in parts]
        blue = [bluegreen(work, f"bg{i}") for i in rounds if "bluegreen" in parts]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| figure | value |\n|---|---|")
    if deploys:
        print(f"| deploy the shop (5 services + job + gateway), warm cache | "
              f"{statistics.median(deploys):.1f} s |")
    if rollbacks:
        print(f"| canary rollback (deploy → RolledBack, 50% errors, 3 clients) | "
              f"{statistics.median(rollbacks):.1f} s |")
    for label, runs in (("mso canary promotion", canary),
                        ("Swarm start-first rolling update", plain)):
        if runs:
            failed = sum(f for f, _ in runs)
            total = sum(t for _, t in runs)
            print(f"| failed requests, {label} | {failed} of {total} |")
    if blue:
        print(f"| blue/green promote → every GET on v2 | "
              f"{statistics.median(b[0] for b in blue):.2f} s |")
        print(f"| blue/green abort → every GET back on v1 | "
              f"{statistics.median(b[1] for b in blue):.2f} s |")
        print(f"| failed requests, blue/green promotion then abort | "
              f"{sum(b[2] for b in blue)} of {sum(b[3] for b in blue)} |")


if __name__ == "__main__":
    main()
