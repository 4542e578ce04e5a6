"""Serving an ASGI app on a socket the caller made, inside the daemon's event loop.

uvicorn's `Server.serve` wakes every 100 ms for the life of the server (its main loop
polls `should_exit` and refreshes the Date header once a second). The daemon serves its
API on one or two sockets and, on demand, the dashboard: idle, those wake-ups were about a
fifth of the daemon's Python time. `QuietServer` wakes once a second (the Date header
keeps its one-second resolution) and at once when `stop()` is called, and installs no
signal handlers: the daemon owns its signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn

#: How often the idle server wakes (the Date header's resolution).
TICK = 1.0


class QuietServer(uvicorn.Server):
    """A uvicorn server that sleeps between ticks instead of polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop_requested = asyncio.Event()

    async def serve_on(self, sock: socket.socket) -> None:
        """Serve on `sock` until `stop()`; no signal handlers (`serve` would add them)."""
        await self._serve([sock])

    def stop(self) -> None:
        """End serving: in-flight requests finish (uvicorn's graceful shutdown)."""
        self.should_exit = True
        self._stop_requested.set()

    async def main_loop(self) -> None:
        counter = 0  # uvicorn refreshes the Date header on ticks that are multiples of 10
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), TICK)
