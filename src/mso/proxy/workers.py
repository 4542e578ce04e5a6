"""Multi-process mode: a supervisor that runs N serving workers with SO_REUSEPORT.

The supervisor owns the public control socket.  Each worker is a
`python -m mso.proxy --worker` process with a private control socket; the
supervisor fans set_table/drain out to all of them, sums their metrics, and
restarts a worker that died, replaying the last table into it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from .client import ProxyClient, ProxyError, ProxyRejected
from .control import ControlError
from . import limits
from .hold import MAX_WAIT
from .hold import merge as merge_held
from .metrics import merge_snapshots
from .table import TableError, parse_table

START_TIMEOUT = 20.0
HELD_POLL = 0.02


class Worker:
    def __init__(self, index: int, control: str) -> None:
        self.index = index
        self.control = f"{control}.w{index}"
        self.proc: asyncio.subprocess.Process | None = None
        self.client = ProxyClient(self.control)


class WorkerPool:
    """`ControlHandler` that fans out to worker processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workers = [Worker(i, args.control) for i in range(args.workers)]
        self.table: Any = None
        self.version = 0
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        await asyncio.gather(*(self._spawn(w) for w in self.workers))
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _spawn(self, w: Worker) -> None:
        cmd = [sys.executable, "-m", "mso.proxy", "--control", w.control, "--worker",
               "--access-log-sample", str(self.args.access_log_sample),
               "--grace", str(self.args.grace)]
        if self.args.log_json:
            cmd.append("--log-json")
        w.proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while True:
            try:
                await w.client.ping()
                break
            except ProxyError:
                if loop.time() > deadline or w.proc.returncode is not None:
                    raise RuntimeError(f"proxy worker {w.index} did not start") from None
                await asyncio.sleep(0.05)
        if self.table is not None:
            await w.client.set_table(self.table)

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.5)
            for w in self.workers:
                if w.proc is not None and w.proc.returncode is not None and not self._stopping:
                    async with self._lock:
                        await w.client.close()
                        try:
                            await self._spawn(w)
                        except (RuntimeError, ProxyError):
                            continue

    async def _all(self, op: str, *args: Any) -> list[Any]:
        try:
            return list(await asyncio.gather(*(getattr(w.client, op)(*args) for w in self.workers)))
        except ProxyRejected as exc:
            raise TableError(str(exc)) from exc
        except ProxyError as exc:
            raise ControlError(f"a worker is unavailable: {exc}") from exc

    async def ping(self) -> dict[str, Any]:
        """Liveness of the supervisor; a restarting worker does not make it fail."""
        listeners: dict[str, int] = {}
        for w in self.workers:
            try:
                listeners = (await w.client.ping()).get("listeners", {})
                break
            except ProxyError:
                continue
        pids = [w.proc.pid for w in self.workers
                if w.proc is not None and w.proc.returncode is None]
        return {"pid": os.getpid(), "version": self.version,
                "listeners": listeners, "workers": pids}

    async def set_table(self, raw: Any) -> int:
        table = parse_table(raw)  # reject bad tables before any worker sees them
        async with self._lock:
            await self._all("set_table", raw)
            self.table = raw
            self.version = table.version
        return self.version

    async def drain(self, endpoint_id: str, timeout: float) -> tuple[bool, int]:
        results = await asyncio.gather(*(self._drain_one(w, endpoint_id, timeout)
                                         for w in self.workers))
        return all(d for d, _ in results), sum(n for _, n in results)

    async def _drain_one(self, w: Worker, endpoint_id: str, timeout: float) -> tuple[bool, int]:
        try:
            resp = await w.client._call(
                {"op": "drain", "endpoint": endpoint_id, "timeout": timeout}, timeout + 10.0)
        except ProxyError as exc:
            raise ControlError(f"worker {w.index}: {exc}") from exc
        return bool(resp["drained"]), int(resp["inflight"])

    async def metrics(self) -> dict[str, Any]:
        snaps = await self._all("metrics")
        return {**merge_snapshots(snaps), "limits": limits.merge(snaps)}

    async def set_control_metrics(self, raw: Any) -> None:
        await self._all("set_control_metrics", raw)

    def current_table(self) -> Any:
        return self.table

    async def held_requests(self, since: int, wait: float) -> dict[str, Any]:
        """The workers' reports summed (`seq` too, so it still only grows); polled every
        HELD_POLL seconds rather than a long poll per worker: a request parked in any
        worker answers it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, MAX_WAIT)
        while True:
            merged = merge_held(await self._all("held"))
            if merged["seq"] != since or loop.time() >= deadline:
                return merged
            await asyncio.sleep(HELD_POLL)

    async def traces(self) -> list[Any]:
        every = [t for got in await self._all("traces") for t in got]
        return sorted(every, key=lambda spans: -spans[0]["start"] if spans else 0)

    async def stop(self, grace: float) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        for w in self.workers:
            if w.proc is not None and w.proc.returncode is None:
                w.proc.terminate()
        for w in self.workers:
            await w.client.close()
            if w.proc is not None:
                try:
                    await asyncio.wait_for(w.proc.wait(), grace + 5.0)
                except asyncio.TimeoutError:
                    w.proc.kill()
                    await w.proc.wait()
