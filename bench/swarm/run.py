"""Swarm engine figures: deploy time (warm image cache), canary rollback time, and failed
requests during a canary promotion vs Swarm's own rolling update of the same change.

    .venv/bin/python bench/swarm/run.py [--rounds N]

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    ensure_swarm()
    work = Path(tempfile.mkdtemp(prefix="mso-bench-swarm-"))
    try:
        deploys = [deploy_shop(work / f"d{i}") for i in range(args.rounds)]
        rollbacks = [canary_rollback(work, f"rb{i}") for i in range(args.rounds)]
        canary = [update_under_load(work, f"c{i}", "canary") for i in range(args.rounds)]
        plain = [update_under_load(work, f"p{i}", "recreate") for i in range(args.rounds)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| figure | value |\n|---|---|")
    print(f"| deploy the shop (5 services + job + gateway), warm cache | "
          f"{statistics.median(deploys):.1f} s |")
    print(f"| canary rollback (deploy → RolledBack, 50% errors, 3 clients) | "
          f"{statistics.median(rollbacks):.1f} s |")
    for label, runs in (("mso canary promotion", canary),
                        ("Swarm start-first rolling update", plain)):
        failed = sum(f for f, _ in runs)
        total = sum(t for _, t in runs)
        print(f"| failed requests, {label} | {failed} of {total} |")


if __name__ == "__main__":
    main()
