"""Entry point of the Swarm controller process: `python -m mso.engines.swarm --state-dir DIR`.

One per app: an exclusive lock on `.mso/swarm/controller.lock` makes a second instance
exit at once. SIGTERM stops it cleanly; the app and its gateway keep running.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
from pathlib import Path

from mso.engines.swarm.controller import SwarmController
from mso.engines.swarm.ctl import ControllerServer
from mso.engines.swarm.state import SwarmPaths


async def _main(paths: SwarmPaths) -> None:
    controller = SwarmController(paths)
    server = await ControllerServer(controller).serve(paths.control_socket)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.stop)
    try:
        await controller.run_forever()
    finally:
        server.close()
        paths.control_socket.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mso.engines.swarm")
    ap.add_argument("--state-dir", required=True)
    args = ap.parse_args(argv)
    paths = SwarmPaths(Path(args.state_dir))
    paths.ensure()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another swarm controller runs for this app", file=sys.stderr)
        return 0
    (paths.folder / "controller.pid").write_text(str(os.getpid()))
    asyncio.run(_main(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
