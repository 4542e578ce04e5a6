"""Reproducer for a `mso down` hang seen while benchmarking (not part of the benchmark).

Starts 20 x 5 trivial replicas (readiness period 200ms), runs `mso down`, and reports how
long it took and which replicas the daemon still shows as STOPPING although their processes
are gone.  Repeats up to --tries times and stops at the first hang.  Always cleans up.

Usage: .venv/bin/python bench/local/down_hang.py [--tries 5]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import processes_with_env  # noqa: E402
from msoapp import MSO, MsoError, MsoRun, manifest_text, new_gateway_port  # noqa: E402


def one_try(folder: Path) -> bool:
    """True when `mso down` hung or took longer than the 10 s stop grace."""
    text = manifest_text(app="downhang", services=20, replicas=5, period="200ms",
                         gateway_port=new_gateway_port())
    with MsoRun(folder, text) as run:
        try:
            run.up()
        except MsoError as exc:  # the stable-port collision, also seen while benchmarking
            print(f"mso up failed, next try: {str(exc).splitlines()[0][:200]}", flush=True)
            return False
        daemon = run.daemon_pid()
        started = time.monotonic()
        down = subprocess.Popen([MSO, "down", "--file", str(folder / "mso.yaml")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = down.communicate(timeout=150)
        took = time.monotonic() - started
        replicas = [p for p in processes_with_env(f"MSO_INSTANCE={run.instance}")
                    if p != daemon]
        print(f"mso down: exit {down.returncode} after {took:.1f} s: {out.strip()[:200]}; "
              f"live replica/proxy processes: {len(replicas)}", flush=True)
        log = (folder / ".mso" / "daemon.log").read_text(errors="replace")
        ignored = [ln for ln in log.splitlines() if "ignored signal" in ln]
        print(f"  'ignored signal' lines in daemon.log: {len(ignored)}"
              + (f", e.g. {ignored[0][-80:]}" if ignored else ""), flush=True)
        if down.returncode != 0:
            print(f"  daemon pid {daemon} still alive: {Path(f'/proc/{daemon}').exists()}",
                  flush=True)
        # Leaving the block runs MsoRun.down: kills a stuck control plane, sweeps replicas.
        return down.returncode != 0 or took > 10


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tries", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="mso-down-hang-") as tmp:
        for i in range(args.tries):
            if one_try(Path(tmp) / f"try{i}"):
                print(f"reproduced on try {i + 1}")
                return
    print("not reproduced")


if __name__ == "__main__":
    main()
