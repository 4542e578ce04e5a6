"""Talking to the Swarm controller process: its socket server, client and launcher.

Requests are newline-delimited JSON on a unix socket (mode 0600), one response each:

| request | response |
|---|---|
| `{"op": "ping"}` | `{"ok": true, "pid": N, "converged": bool}` |
| `{"op": "wake"}` | `{"ok": true}`: reconcile now |
| `{"op": "begin", "service", "from", "to", "strategy"}` | `{"ok": true, "started": bool}` |
| `{"op": "rollout", "action": status/promote/abort/pause/resume, "service"}` | `{"ok": true, "status": {...}}` |
| `{"op": "metrics"}` | `{"ok": true, "metrics": SNAPSHOT}`: the gateway's counters (the dashboard) |
| `{"op": "stop"}` | `{"ok": true}`, then the process exits |
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mso.errors import Conflict
from mso.engines.swarm.state import SwarmPaths
from mso.engines.swarm.swarmapi import SwarmError

START_TIMEOUT = 60.0


class ControllerServer:
    """Serves CLI requests inside the controller process."""

    def __init__(self, controller: Any) -> None:
        self.c = controller

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        c = self.c
        if op == "ping":
            return {"ok": True, "pid": os.getpid(), "converged": c.converged}
        if op == "wake":
            c.wake()
            return {"ok": True}
        if op == "stop":
            c.stop()
            return {"ok": True}
        if op == "begin":
            await c.observe()
            service = str(request["service"])
            if (service, "main") not in c.obs:
                c.wake()
                return {"ok": True, "started": False}
            c.rollouts.begin(service, int(request["from"]), int(request["to"]),
                             request.get("strategy"))
            c.wake()
            return {"ok": True, "started": True}
        if op == "metrics":
            return {"ok": True, "metrics": await c.metrics()}
        if op == "rollout":
            return {"ok": True, "status": self._rollout(str(request["action"]),
                                                        str(request["service"]))}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _rollout(self, action: str, service: str) -> dict[str, Any]:
        status: dict[str, Any] = self.c.rollouts.command(action, service)
        return status

    async def serve(self, path: Path) -> asyncio.AbstractServer:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(self._connection, str(path))
        os.chmod(path, 0o600)
        return server

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    resp = await self.handle(json.loads(line))
                except (Conflict, SwarmError) as exc:  # a RolloutError is a Conflict
                    resp = {"ok": False, "error": str(exc)}
                except KeyError as exc:
                    resp = {"ok": False, "error": f"unknown service {exc}"}
                except Exception as exc:  # a bad request must not kill the controller
                    resp = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(resp).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # The controller is stopping and asyncio.run cancels the connections still
            # open (the `stop` request's own, for one); streams would log it as an error.
            pass
        finally:
            writer.close()


class ControllerClient:
    """The CLI's side: synchronous, one request per connection."""

    def __init__(self, paths: SwarmPaths) -> None:
        self.paths = paths
        self._started = False  # this client spawned a controller process

    def call(self, request: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.paths.control_socket))
                sock.sendall(json.dumps(request).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError as exc:
            raise SwarmError(f"the swarm controller is not answering ({exc}); see "
                             f"{self.paths.log}") from exc
        try:
            resp: dict[str, Any] = json.loads(data)
        except ValueError as exc:
            raise SwarmError("the swarm controller closed the connection") from exc
        if not resp.get("ok"):
            raise SwarmError(str(resp.get("error")))
        return resp

    def alive(self) -> bool:
        try:
            self.call({"op": "ping"}, timeout=5.0)
            return True
        except SwarmError:
            return False

    def start(self) -> None:
        """Start the controller process unless one runs, without waiting for it to
        answer: a deploy starts it before its image checks, so that the process starts
        Python and imports while the CLI works (a second one exits at once: the lock)."""
        if self._started or self.running():
            return
        self.paths.ensure()
        log = open(self.paths.log, "ab")
        try:
            subprocess.Popen([sys.executable, "-m", "mso.engines.swarm",
                              "--state-dir", str(self.paths.state_dir)],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True, cwd="/")
        finally:
            log.close()
        self._started = True

    def ensure_running(self) -> None:
        """Start the controller process unless it answers already, and wait until it
        answers."""
        if self.alive():
            return
        self.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.alive():
                return
            time.sleep(0.1)
        raise SwarmError(f"the swarm controller did not start; see {self.paths.log}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the controller and return only once it is gone (its lock is free): a
        controller still running during `down` would recreate what `down` removes."""
        if not self.running():
            return
        try:
            self.call({"op": "stop"}, timeout=10.0)
        except SwarmError:
            pass  # running but not answering (busy machine): signal it instead
        for sig, wait in ((None, timeout), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if sig is not None:
                pid = self._pid()
                if pid:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not self.running():
                    return
                time.sleep(0.1)
        raise SwarmError(f"the swarm controller did not stop; see {self.paths.log}")

    def running(self) -> bool:
        """True while a controller process holds this app's lock."""
        try:
            fd = os.open(self.paths.lock, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing also drops the lock if we took it
        return False

    def _pid(self) -> int:
        try:
            return int((self.paths.folder / "controller.pid").read_text())
        except (OSError, ValueError):
            return 0
