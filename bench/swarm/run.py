"""Swarm engine figures: the shop's deploy time (cold and warm image cache), the bad
canary's rollback time, failed requests during a canary promotion vs a `recreate` of
the same change, and blue/green switch times with the failed requests of a
promotion and an abort.

    PYTHONPATH=src .venv/bin/python bench/swarm/run.py [--rounds N]
        [--parts deploy,cold,rollback,update,recreate,bluegreen]

Needs a running single-node Swarm (see scripts/swarm-lab.sh). Prints a markdown table.

* deploy (warm): the shop deployed once (its images built), `mso down`, then timed from
  starting `mso deploy` until the shop's page answers through the gateway with data
  from every service (all services READY).
* cold: the same with no image built: the run uses a copy of mso whose shim and proxy
  carry a comment of their own, so the base, gateway and app images get new tags and
  are imported and built from nothing (the images other runs use are never removed;
  the ones this run made are removed at the end). The proxy's wheels come from the
  wheel cache, as on any machine that deployed once.
* rollback: the echo app deployed, then under 3 clients a release failing half its
  requests, timed from starting `mso deploy` until the rollout is RolledBack and the
  gateway's table sends the canary nothing (stable serves 100%).

The `recreate` row runs the same change with `strategy: recreate`: since issue 14 Swarm's
stop-first update of every task at once (the old task stops before the new one starts),
so requests fail in the gap by design; the same gateway and the same load. (Before, mso
mapped `recreate` to Swarm's own start-first rolling update, and this row measured that.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.e2e.swarm.conftest import (Load, app_copy, ensure_swarm, free_port,  # noqa: E402
                                      mso, mso_json, wait_for)
from tests.e2e.swarm.test_bluegreen_on_swarm import _blue_green, _versions  # noqa: E402

from mso.engines.swarm.state import TABLE_KEY  # noqa: E402
from mso.store.db import Store  # noqa: E402

ECHO = REPO / "tests" / "e2e" / "swarm" / "echoapp"


def _set(manifest: Path, old: str, new: str) -> None:
    manifest.write_text(manifest.read_text().replace(old, new))


def _down(manifest: Path) -> None:
    mso("down", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent, check=False)


def _shop_answers(port: int) -> bool:
    """The shop's page, with what inventory (seeded by the job), payments and orders
    give it, through the gateway."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            page = r.read().decode()
    except OSError:
        return False
    return all(part in page for part in ("Blue-green hoodie", "approved", "Recent orders"))


def _timed_deploy(manifest: Path, port: int) -> tuple[float, float]:
    """(seconds until `mso deploy` returned, seconds until the page answered)."""
    started = time.monotonic()
    mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
    returned = time.monotonic() - started
    wait_for(lambda: _shop_answers(port), 60, "the shop's page", 0.05)
    return returned, time.monotonic() - started


def deploy_shop(work: Path) -> tuple[float, float]:
    """Warm: every image built already, the app down."""
    port = free_port()
    manifest = app_copy(REPO / "examples" / "shop", work / "shop", port)
    try:
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        _down(manifest)
        return _timed_deploy(manifest, port)
    finally:
        _down(manifest)


def cold_shop(work: Path) -> tuple[float, float]:
    """Cold: no image of this run's mso exists (see the module doc)."""
    port = free_port()
    manifest = app_copy(REPO / "examples" / "shop", work / "shop", port)
    src = work / "src"
    shutil.copytree(REPO / "src" / "mso", src / "mso",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    nonce = f"\n# bench/swarm/run.py cold run {uuid.uuid4().hex}\n"
    for changed in ("engines/images/shim.py", "proxy/__init__.py"):
        with open(src / "mso" / changed, "a") as f:
            f.write(nonce)
    env = {"PYTHONPATH": str(src), "MSO_IMAGE_CACHE": str(work / "image-cache")}
    before = set(_mso_images())
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return _timed_deploy(manifest, port)
    finally:
        _down(manifest)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        made = sorted(set(_mso_images()) - before)
        if made:
            subprocess.run(["docker", "rmi", *made], capture_output=True, check=False)


def _mso_images() -> list[str]:
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.split() if line.startswith("mso/")]


def _status(manifest: Path) -> str:
    return str(mso_json("rollout", "status", "echo", "--engine", "swarm", "-f",
                        str(manifest), cwd=manifest.parent)["phase"])


def _rolled_back(store: Store) -> bool:
    """The rollout ended RolledBack and the table the gateway got sends the canary
    nothing (read from the store: an `mso` command per look would take longer than
    what it measures)."""
    raw = store.get_rollout("echo")
    if raw is None or raw.get("phase") != "RolledBack":
        return False
    table = json.loads(store.get_meta(TABLE_KEY) or "{}")
    subsets = (table.get("clusters") or {}).get("echo/http", {}).get("subsets") or {}
    return all(body.get("weight", 0) == 0 for name, body in subsets.items()
               if name != "stable")


def canary_rollback(work: Path, name: str) -> tuple[float, float]:
    """(seconds until `mso deploy` returned, seconds until stable serves 100%)."""
    port = free_port()
    manifest = app_copy(ECHO, work / name, port)
    try:
        mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
        _set(manifest, 'ERROR_RATE: "0"', 'ERROR_RATE: "0.5"')
        store = Store(manifest.parent / ".mso" / "swarm.db")
        with Load(f"http://127.0.0.1:{port}/", threads=3) as load:
            wait_for(lambda: load.ok > 20, 60, "traffic")
            started = time.monotonic()
            mso("deploy", "--engine", "swarm", "-f", str(manifest), cwd=manifest.parent)
            returned = time.monotonic() - started
            wait_for(lambda: _rolled_back(store), 300, "rollback", 0.05)
            return returned, time.monotonic() - started
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
    ap.add_argument("--parts", default="deploy,cold,rollback,update,recreate,bluegreen")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    ensure_swarm()
    work = Path(tempfile.mkdtemp(prefix="mso-bench-swarm-"))
    rounds = range(args.rounds)
    load = [os.getloadavg()[0]]
    try:
        deploys = [deploy_shop(work / f"d{i}") for i in rounds if "deploy" in parts]
        colds = [cold_shop(work / f"c{i}") for i in rounds if "cold" in parts]
        rollbacks = [canary_rollback(work, f"rb{i}") for i in rounds if "rollback" in parts]
        load.append(os.getloadavg()[0])
        canary = [update_under_load(work, f"c{i}", "canary") for i in rounds if "update" in parts]
        plain = [update_under_load(work, f"p{i}", "recreate") for i in rounds
                 if "recreate" in parts]
        blue = [bluegreen(work, f"bg{i}") for i in rounds if "bluegreen" in parts]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average (1 min) at the start and after the rollbacks: "
          f"{', '.join(f'{x:.1f}' for x in load)}; {len(rounds)} round(s), medians\n")
    print("| figure | value |\n|---|---|")
    for label, runs in (("warm: images built, app down", deploys),
                        ("cold: no image built", colds)):
        if runs:
            print(f"| deploy the shop (5 services + job + gateway), {label}: `mso deploy` "
                  f"→ page answered (all READY) | {_median(runs, 1)} "
                  f"(`mso deploy` returned after {_median(runs, 0)}) |")
    if rollbacks:
        print(f"| canary rollback (50% errors, 3 clients): `mso deploy` → RolledBack, "
              f"stable 100% | {_median(rollbacks, 1)} (`mso deploy` returned after "
              f"{_median(rollbacks, 0)}) |")
    for label, runs in (("mso canary promotion", canary),
                        ("`strategy: recreate` (stop-first: a gap by design)", plain)):
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


def _median(runs: list[tuple[float, float]], index: int) -> str:
    values = [run[index] for run in runs]
    spread = f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.1f} s{spread}"


if __name__ == "__main__":
    main()
