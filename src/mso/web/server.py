"""Serving the dashboard on 127.0.0.1 only: from the daemon's process, or a remote app's.

The daemon starts it on the first `mso dashboard` (POST /v1/dashboard), not at start-up:
an app nobody watches pays for neither the templates' import nor a port nor the
sampler's one metrics call a second. It then keeps serving until the daemon stops
(`mso down`, or a detach: a new daemon starts it again on the next `mso dashboard`).

It runs in the daemon's event loop, beside the API (`QuietServer.serve_on` on a socket
bound here, as the daemon does for the API), so pages read the daemon's state directly
and actions call the same methods as the API's handlers. The daemon imports this module
lazily from its entry point only (mso.daemon.__main__): the one import from the daemon
layer up to mso.web that the import contract allows (pyproject.toml).

An app on Swarm or Kubernetes has no daemon: `python -m mso.web` (mso.web.__main__)
serves the same `Dashboard` over a `RemoteSource` in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from typing import TYPE_CHECKING

import uvicorn

from mso.api.serving import QuietServer
from mso.errors import Conflict
from mso.web import data
from mso.web.app import create_dashboard

from mso.web.source import DaemonSource, Source

if TYPE_CHECKING:
    from mso.daemon.core import Daemon

HOST = "127.0.0.1"


class PortBusy(Conflict):
    """The dashboard cannot listen on the port asked for."""


class Dashboard:
    """A dashboard server: started once, on one port, until `stop`."""

    def __init__(self, source: Source, token: str) -> None:
        self.token = token
        self.port: int | None = None
        self.closing = asyncio.Event()
        self.source = source
        self.sampler = data.Sampler(self.source.metrics, self.source.clusters)
        self._server: QuietServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, port: int | None) -> int:
        """Serve on `port` (None or 0: a free one); the port it serves on. Asking again
        for the port it already has, or for none, answers that port."""
        if self.port is not None:
            if port not in (None, 0, self.port):
                raise PortBusy(f"the dashboard already runs on {HOST}:{self.port}; "
                               f"`mso down` stops it")
            return self.port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port or 0))
        except OSError as exc:
            sock.close()
            reason = "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
            raise PortBusy(f"the dashboard cannot listen on {HOST}:{port}: {reason}") from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        app = create_dashboard(self.source, self.token, self.sampler, self.closing)
        self._server = QuietServer(uvicorn.Config(
            app, log_level="warning", lifespan="off", access_log=False,
            timeout_graceful_shutdown=3))
        self._tasks = [asyncio.ensure_future(self._server.serve_on(sock)),
                       asyncio.ensure_future(self.sampler.run())]
        self.source.store().add_event("dashboard.started",
                                    f"dashboard serving on http://{HOST}:{self.port}/")
        return self.port

    async def stop(self) -> None:
        self.closing.set()
        if self._server is not None:
            self._server.stop()
        for task in self._tasks[1:]:  # the sampler: the server ends by itself
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []


def daemon_dashboard(daemon: Daemon, token: str) -> Dashboard:
    """The embedded engine's dashboard, served from its daemon's event loop."""
    return Dashboard(DaemonSource(daemon), token)
