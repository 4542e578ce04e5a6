"""ControllerClient.stop returns only once the controller process is gone, even when it does
not answer on its socket (a live controller would recreate what `mso down` removes)."""
from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mso.engines.swarm.ctl import ControllerClient, ControllerServer
from mso.engines.swarm.state import SwarmPaths

# Holds the controller lock like a real controller, but never answers the control socket.
HOLDER = """
import fcntl, os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").write(str(os.getpid()))
if sys.argv[3] == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("locked", flush=True)
while True:
    time.sleep(60)
"""


def _hold(paths: SwarmPaths, mode: str) -> subprocess.Popen[str]:
    paths.ensure()
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(paths.lock),
         str(paths.folder / "controller.pid"), mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_no_controller_means_nothing_to_stop(tmp_path: Path) -> None:
    client = ControllerClient(SwarmPaths(tmp_path))
    assert not client.running()
    client.stop(timeout=1)


@pytest.mark.parametrize("mode", ["plain", "ignore-term"])
def test_a_controller_that_does_not_answer_is_signalled_until_gone(
        tmp_path: Path, mode: str) -> None:
    paths = SwarmPaths(tmp_path)
    proc = _hold(paths, mode)
    client = ControllerClient(paths)
    try:
        assert client.running()
        started = time.monotonic()
        client.stop(timeout=0.5)
        assert not client.running()
        assert proc.wait(timeout=30) != 0
        assert time.monotonic() - started < 30
    finally:
        proc.kill()
        proc.wait()



class _StoppableController:
    def __init__(self) -> None:
        self.stopped = asyncio.Event()

    def stop(self) -> None:
        self.stopped.set()


def test_stopping_with_a_connection_open_logs_no_error(tmp_path: Path) -> None:
    """`mso down` asks the controller to stop over a connection that is still open when the
    process exits; that used to leave a CancelledError traceback in the controller log."""
    errors: list[dict[str, object]] = []
    clients: list[socket.socket] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        controller = _StoppableController()
        server = await ControllerServer(controller).serve(tmp_path / "c.sock")
        client = socket.socket(socket.AF_UNIX)
        clients.append(client)
        client.setblocking(False)
        await loop.sock_connect(client, str(tmp_path / "c.sock"))
        await loop.sock_sendall(client, json.dumps({"op": "stop"}).encode() + b"\n")
        await asyncio.wait_for(controller.stopped.wait(), 10)
        assert (await loop.sock_recv(client, 100)).startswith(b'{"ok": true')
        server.close()  # returning now cancels the handler waiting for the next request

    try:
        asyncio.run(main())
    finally:
        for client in clients:
            client.close()
    assert errors == []
