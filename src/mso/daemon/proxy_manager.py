"""Keeps mso's proxy process running and fed with the current route table.

The proxy lives in its own process and session so it keeps serving its last table while
the daemon is down. A restarted daemon re-adopts it when the recorded pid and process
start time still match and it answers a ping; otherwise it starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mso.engines.local.process import ProcessRef, is_same_process, spawn, wait_exit
from mso.proxy.client import ProxyClient, ProxyUnavailable
from mso.store.db import Store

log = logging.getLogger("mso.daemon.proxy")

_META_KEY = "proxy_process"


class ProxyManager:
    """Owns the proxy process and pushes route tables to it."""

    def __init__(self, store: Store, socket_path: Path, log_dir: Path, env: dict[str, str],
                 workers: int = 1) -> None:
        self.store = store
        self.socket_path = socket_path
        self.log_dir = log_dir
        self.env = env
        self.workers = workers
        self.client = ProxyClient(str(socket_path))
        self.ref: ProcessRef | None = None
        self._last_table: dict[str, Any] | None = None
        self._version = int(store.get_meta("proxy_table_version") or 0)
        self._lock = asyncio.Lock()

    async def ensure_running(self) -> None:
        """Adopt the recorded proxy if it is alive and answers, else start one."""
        recorded = self.store.get_meta(_META_KEY)
        if recorded:
            data = json.loads(recorded)
            ref = ProcessRef(int(data["pid"]), int(data["start_time"]))
            if is_same_process(ref) and await self._answers(2.0):
                self.ref = ref
                log.info("adopted proxy pid %s", ref.pid)
                return
            if is_same_process(ref):
                os.killpg(ref.pid, signal.SIGKILL)
        await self._start()

    async def _answers(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.client.ping(), timeout)
            return True
        except (ProxyUnavailable, asyncio.TimeoutError, OSError):
            return False

    async def _start(self) -> None:
        self.socket_path.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "mso.proxy", "--control", str(self.socket_path),
                "--workers", str(self.workers)]
        self.ref = spawn(argv, env=self.env, cwd="/",
                         stdout_path=self.log_dir / "proxy.out",
                         stderr_path=self.log_dir / "proxy.err")
        self.store.set_meta(_META_KEY, json.dumps({"pid": self.ref.pid,
                                                   "start_time": self.ref.start_time}))
        for _ in range(200):
            if await self._answers(1.0):
                self._last_table = None
                return
            if not is_same_process(self.ref):
                break
            await asyncio.sleep(0.05)
        raise RuntimeError("the proxy process did not start; see "
                           f"{self.log_dir / 'proxy.err'}")

    async def push(self, table: dict[str, Any]) -> bool:
        """Send `table` if it changed since the last push; True when it was applied."""
        async with self._lock:
            if table == self._last_table:
                return False
            self._version += 1
            versioned = dict(table, version=self._version)
            await self.client.set_table(versioned)
            self._last_table = table
            self.store.set_meta("proxy_table_version", str(self._version))
            return True

    async def drain(self, endpoint: str, timeout: float) -> bool:
        # Drains wait for in-flight work, so each gets its own control connection: one
        # slow drain must not hold up the others or the route-table pushes.
        client = ProxyClient(str(self.socket_path))
        try:
            return await client.drain(endpoint, timeout)
        except ProxyUnavailable:
            return True  # no proxy, no traffic to wait for
        finally:
            await client.close()

    async def metrics(self) -> dict[str, Any]:
        return await self.client.metrics()

    async def stop(self) -> None:
        await self.client.close()
        if self.ref is None or not is_same_process(self.ref):
            return
        try:
            os.killpg(self.ref.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        # Wait for the exit itself (a pidfd), not for /proc/PID to go: the proxy is our
        # child, so it stays there as a zombie until it is reaped, which waiting does.
        try:
            await asyncio.wait_for(wait_exit(self.ref), 3.0)
        except (asyncio.TimeoutError, TimeoutError):
            try:
                os.killpg(self.ref.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(wait_exit(self.ref), 5.0)
        self.store.delete_meta(_META_KEY)
