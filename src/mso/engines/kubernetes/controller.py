"""The background controller: drives rollouts on Kubernetes while any is active.

`mso deploy --engine kubernetes` (and `mso rollout ...`, `mso rollback`) start it when a
rollout is in progress: `python -m mso.engines.kubernetes.controller DIR`, where DIR is
the manifest's folder. State lives in `DIR/.mso/kubernetes.db` (shared with the CLI,
which changes rollout state directly), its pid in `DIR/.mso/k8s-controller.pid` and its
log in `DIR/.mso/k8s-controller.log`. Each tick it runs the rollout controller (analysis
from the gateway's metrics) and one reconcile pass; it exits on its own once no rollout
has been active for `IDLE_EXIT` seconds, so nothing lingers after a deploy settles.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mso.engines.kubernetes import state
from mso.engines.kubernetes.host import KubeHost
from mso.engines.kubernetes.kube import Kube
from mso.store.hold import quiet

TICK = 0.5
IDLE_EXIT = 20.0
log = logging.getLogger("mso.engines.kubernetes.controller")


def pid_file(base_dir: Path) -> Path:
    return state.state_dir(base_dir) / "k8s-controller.pid"


def running_pid(base_dir: Path) -> int | None:
    try:
        pid = int(pid_file(base_dir).read_text().strip())
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"mso.engines.kubernetes.controller" in cmdline else None


def ensure_running(base_dir: Path) -> int:
    """Start the controller for `base_dir` unless one runs; return its pid."""
    pid = running_pid(base_dir)
    if pid is not None:
        return pid
    folder = state.state_dir(base_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "k8s-controller.log", "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mso.engines.kubernetes.controller",
                                 str(base_dir)], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    pid_file(base_dir).write_text(str(proc.pid))
    return proc.pid


def stop(base_dir: Path, timeout: float = 10.0) -> None:
    pid = running_pid(base_dir)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(base_dir) == pid:
        time.sleep(0.05)


def any_active(host: KubeHost) -> bool:
    """A rollout is active, a finished blue/green still hands traffic back to `svc`, or a
    service is autoscaled (the autoscaler runs here)."""
    return bool(host.last_plan.handoffs) or bool(host.autoscaled()) or any(
        host.rollouts.active(n) is not None for n, w in host.store.desired().items()
        if w.kind == "service")


async def run(base_dir: Path) -> int:
    store = state.open_store(base_dir)
    settings = state.load_settings(store)
    if settings is None:
        log.error("no deploy recorded in %s", base_dir)
        return 1
    host = KubeHost(store, Kube(settings.kubeconfig, settings.context), settings)
    host.rollouts.recover()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    idle_since: float | None = None
    while not stopping.is_set():
        try:
            token = quiet(store, time.time())
            if token is not None:  # no command is recording a deploy
                await host.tick(lambda: quiet(store, time.time()) == token)
        except Exception:
            log.exception("tick failed; retrying")
        if any_active(host):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE_EXIT:
            log.info("no rollout active for %.0fs; exiting", IDLE_EXIT)
            break
        try:
            await asyncio.wait_for(stopping.wait(), TICK)
        except asyncio.TimeoutError:
            pass
    return 0


def main() -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base_dir = Path(sys.argv[1]).resolve()
    code = asyncio.run(run(base_dir))
    if running_pid(base_dir) in (os.getpid(), None):
        pid_file(base_dir).unlink(missing_ok=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
