"""Issue 15 part 4's figures: full and read-only disks under `.mso/` (root only).

Each run starts the echo app (2 replicas) with `.mso/` on its own small filesystem, sends
100 GETs/s through the gateway, and:

- full: fills the 4 MiB tmpfs, SIGKILLs a replica (state changes the store cannot
  take), then the daemon and its keeper, times `mso up -d` starting a new control plane
  on the full disk, keeps the disk full for `--hold` seconds, deletes the filler and
  measures the time until `mso ps` reports the store writable again (held events written);
- read-only: turns the 16 MiB ext4 image read-only as the kernel does after an I/O
  error (`trigger_fs_error`, errors=remount-ro), SIGKILLs a replica, then the daemon and
  its keeper, checks `mso up -d` refuses in one line, holds, `mso down` (no daemon: it
  stops the processes itself);

and counts failed requests (goal 0), checks the killed replica came back READY and
`PRAGMA integrity_check` of the state database (ok; for the read-only case after
`e2fsck`). Prints a table and writes it to docs/benchmarks.md under the section below,
replacing only that section.

Usage: .venv/bin/python bench/failures/disk.py [--runs 3] [--hold 10] [--no-write]
"""
from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from bench.docs_section import write_section  # noqa: E402

from tests.e2e.harness import MsoApp, wait_for  # noqa: E402
from tests.e2e.load import Load  # noqa: E402
from tests.e2e.test_full_disk import (control_plane, kill_and_wait,  # noqa: E402
                                      patient_echo_app)
from tests.tinyfs import can_mount, emergency_ro, ext4, fill, tmpfs  # noqa: E402

SECTION = "## Full and read-only disks (issue 15)"


def integrity(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def new_app(work: Path) -> MsoApp:
    folder = work / "app"
    folder.mkdir(parents=True)
    app = MsoApp(folder)
    app.env.update(MSO_RAW_LOG_SIZE="64Ki", MSO_LOG_MAX_SIZE="256Ki")
    return app


def writable(app: MsoApp) -> bool:
    return bool(app.json("ps")["store"]["writable"])


def restarted(app: MsoApp, replica: str) -> bool:
    return any(r["replica"] == replica and r["restarts"] >= 1 and r["state"] == "READY"
               for r in app.ps())


def full_run(work: Path, hold: float) -> dict[str, float | int | str]:
    app = new_app(work)
    state = app.folder / ".mso"
    with tmpfs(state, "4m"):
        try:
            patient_echo_app(app, replicas=2)
            with Load(app.gateway_port, rate=100) as load:
                wait_for(lambda: load.result.ok > 100, message="traffic")
                before = load.result.total
                filler = fill(state)
                victim = app.replicas("echo")[0]
                os.kill(victim["pid"], signal.SIGKILL)
                wait_for(lambda: not writable(app), message="store unwritable")
                wait_for(lambda: restarted(app, victim["replica"]), message="restarted")
                # The control plane dies on the full disk; `mso up -d` starts a new one there.
                daemon, keepers = control_plane(app)
                kill_and_wait([daemon, *keepers])
                t0 = time.monotonic()
                up = app.cli("up", "-d", check=False)
                restart = time.monotonic() - t0
                up_ok = up.returncode == 0 and "Traceback" not in up.stderr
                began = time.monotonic()
                ps_times = []
                while time.monotonic() - began < hold:
                    t0 = time.monotonic()
                    app.cli("ps")
                    ps_times.append(time.monotonic() - t0)
                freed = time.monotonic()
                filler.unlink()
                wait_for(lambda: writable(app), message="store writable again",
                         interval=0.02)
                recovered = time.monotonic() - freed
                during = load.result.total - before
            result = load.stop()
            types = [e["type"] for e in app.events()]
        finally:
            app.teardown()
        check = integrity(state / "state.db")
    return {"failed": len(result.failures), "during": during, "recover": recovered,
            "ps": statistics.median(ps_times), "integrity": check,
            "reported": types.count("store.unwritable"), "restart": restart,
            "up_ok": "ok" if up_ok else f"failed: {up.stderr.strip()[:200]}"}


def ro_run(work: Path, hold: float) -> dict[str, float | int | str]:
    app = new_app(work)
    state = app.folder / ".mso"
    image = work / "state.img"
    with ext4(state, image):
        try:
            patient_echo_app(app, replicas=2)
            with Load(app.gateway_port, rate=100) as load:
                wait_for(lambda: load.result.ok > 100, message="traffic")
                before = load.result.total
                emergency_ro(state)
                victim = app.replicas("echo")[0]
                os.kill(victim["pid"], signal.SIGKILL)
                wait_for(lambda: not writable(app), message="store unwritable")
                wait_for(lambda: restarted(app, victim["replica"]), message="restarted")
                # The control plane dies on the read-only disk: no new one can start there.
                daemon, keepers = control_plane(app)
                kill_and_wait([daemon, *keepers])
                up = app.cli("up", "-d", check=False)
                lines = [ln for ln in up.stderr.splitlines() if ln.strip()]
                refused = up.returncode != 0 and len(lines) == 1
                deadline = time.monotonic() + hold
                wait_for(lambda: time.monotonic() > deadline, timeout=hold + 5,
                         message="hold")
                during = load.result.total - before
            result = load.stop()
            t0 = time.monotonic()
        finally:
            app.teardown()
        down = time.monotonic() - t0
    with ext4(work / "after", image, fresh=False) as mounted:
        check = integrity(mounted / "state.db")
    return {"failed": len(result.failures), "during": during, "down": down,
            "integrity": check, "refused": "one line" if refused else f"{lines!r}"[:200]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    why = can_mount()
    if why:
        raise SystemExit(why)
    fulls, ros = [], []
    with tempfile.TemporaryDirectory(prefix="mso-bench-disk-") as tmp:
        for i in range(args.runs):
            fulls.append(full_run(Path(tmp) / f"full-{i}", args.hold))
            ros.append(ro_run(Path(tmp) / f"ro-{i}", args.hold))

    def med(rows: list[dict[str, float | int | str]], key: str) -> str:
        values = [float(r[key]) for r in rows]
        return f"{statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"

    def total(rows: list[dict[str, float | int | str]], key: str) -> int:
        return int(sum(float(r[key]) for r in rows))

    lines = [SECTION, "",
             f"`.venv/bin/python bench/failures/disk.py --runs {args.runs} --hold "
             f"{args.hold:g}` ({time.strftime('%Y-%m-%d')}, 2 cores, as root: it "
             "mounts): the echo app, 2 replicas, 100 GETs/s through the gateway; `.mso/` "
             "on a 4 MiB tmpfs filled to the last byte, or on a 16 MiB ext4 image made read-only as after an I/O "
             f"error; one replica SIGKILLed on the broken disk; held {args.hold:g} s.", "",
             "| what | result | goal |", "|---|---|---|",
             f"| full: requests failed while full (of {total(fulls, 'during')}) | "
             f"{total(fulls, 'failed')} | 0 |",
             f"| full: store writable again after the filler is deleted (s) | "
             f"{med(fulls, 'recover')} | < 5 |",
             f"| full: `mso ps` while full (s, includes the CLI's start) | "
             f"{med(fulls, 'ps')} | |",
             f"| full: `store.unwritable` events per outage | "
             f"{', '.join(str(r['reported']) for r in fulls)} | 1 |",
             f"| full: `PRAGMA integrity_check` | "
             f"{', '.join(str(r['integrity']) for r in fulls)} | ok |",
             f"| full: daemon and keeper SIGKILLed, `mso up -d` on the full disk (s) | "
             f"{med(fulls, 'restart')} ({', '.join(str(r['up_ok']) for r in fulls)}) | "
             "starts, re-adopts, serves |",
             f"| read-only: requests failed (of {total(ros, 'during')}) | "
             f"{total(ros, 'failed')} | 0 |",
             f"| read-only: daemon and keeper SIGKILLed, `mso up -d` refused | "
             f"{', '.join(str(r['refused']) for r in ros)} | one line |",
             f"| read-only: `mso down` on the read-only disk, no daemon (s) | "
             f"{med(ros, 'down')} | |",
             f"| read-only: `PRAGMA integrity_check` after e2fsck | "
             f"{', '.join(str(r['integrity']) for r in ros)} | ok |",
             "", "In every run the killed replica was restarted and READY while the disk "
             "refused writes (its output to /dev/null on the read-only disk), and the "
             "requests kept flowing while the control plane was dead and restarted (full) "
             "or refused to start (read-only; `mso down` then stops the processes itself). "
             "Recovery is "
             "the store's retry period (1 s) plus the CLI poll; a read-only ext4 cannot be "
             "remounted read-write without a repair, so that case ends with `mso down`.", ""]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        write_section(SECTION, report)


if __name__ == "__main__":
    main()
