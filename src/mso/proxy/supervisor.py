"""`python -m mso.proxy --supervise`: a proxy that survives the death of its serving process.

This is the embedded engine's supervised data plane (mso.daemon.proxy_manager) for a proxy
that runs alone, without a daemon: as the Swarm gateway's container command. The
supervisor serves the public control socket itself and runs two child proxies, each a
plain `python -m mso.proxy` with a control socket of its own:

* the **active** one serves traffic. After every route table it applies, the supervisor
  takes duplicates of its listening sockets (`handoff.export_sockets`), so the sockets
  stay in LISTEN state when it dies and new connections wait in the accept backlog
  instead of being refused;
* the **spare** is started and idle. When the active proxy exits, even by SIGKILL, the
  spare is handed the sockets and the last table at once and accepts the waiting
  connections; a new spare is then started. Without a spare a new proxy is started.

A proxy that does not answer its control socket for three pings in a row (hung, or
SIGSTOPped) is killed and replaced the same way. Five failovers within 10 s are
immediate, more back off (0.1 s doubling to 10 s).

With `--state FILE` the supervisor writes each table it applied there and loads it when
it starts, so a restarted container (a `docker kill`, a crash of the supervisor itself)
serves again as soon as its process is up, without waiting for its controller to push.

SIGTERM: the held sockets are closed, the active proxy gets SIGTERM (it finishes its
in-flight requests within its grace) and the spare is stopped.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

from .client import ProxyClient, ProxyError, ProxyRejected
from .control import ControlError
from .handoff import HandoffError, Key, export_sockets, import_sockets
from .table import TableError, parse_table

log = logging.getLogger("mso.proxy.supervisor")

START_TIMEOUT = 20.0
FREE_RESTARTS = 5
BURST_WINDOW = 10.0
MAX_BACKOFF = 10.0
WATCHDOG_PERIOD = 1.0
WATCHDOG_TIMEOUT = 2.0
WATCHDOG_MISSES = 3


class Child:
    """One serving proxy process and its private control socket."""

    def __init__(self, proc: asyncio.subprocess.Process, control: str) -> None:
        self.proc = proc
        self.control = control
        self.client = ProxyClient(control, timeout=10.0)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


class Supervisor:
    """`ControlHandler` that keeps an active proxy and a spare (see the module docstring)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.control: str = args.control
        self.state: str | None = args.state
        self.active: Child | None = None
        self.spare: Child | None = None
        self.held: dict[Key, socket.socket] = {}
        self.table: dict[str, Any] | None = None
        self.version = 0
        self.failovers = 0
        self._serial = 0
        self._deaths: list[float] = []
        self._lock = asyncio.Lock()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._spare_task: asyncio.Task[None] | None = None

    # -- children ------------------------------------------------------------------------
    async def _spawn(self) -> Child:
        self._serial += 1
        control = f"{self.control}.p{self._serial}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(control)
        cmd = [sys.executable, "-m", "mso.proxy", "--control", control,
               "--grace", str(self.args.grace),
               "--access-log-sample", str(self.args.access_log_sample)]
        if self.args.log_json:
            cmd.append("--log-json")
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL)
        child = Child(proc, control)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    await child.client.ping()
                    return child
                except ProxyError:
                    if time.monotonic() > deadline or not child.alive:
                        await self._kill(child)
                        raise RuntimeError(f"proxy {control} did not start") from None
                    await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            # stop() cancelled a spare still starting: it must not outlive the supervisor.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            raise

    @staticmethod
    async def _kill(child: Child) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.proc.kill()
        await child.proc.wait()
        await child.client.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(child.control)

    def _start_spare(self) -> None:
        if self._stopping or (self._spare_task is not None and not self._spare_task.done()):
            return
        self._spare_task = asyncio.get_running_loop().create_task(self._make_spare())

    async def _make_spare(self) -> None:
        delay = 0.0
        while not self._stopping and self.spare is None:
            try:
                child = await self._spawn()
            except RuntimeError as exc:
                log.warning("spare proxy: %s", exc)
                delay = min(max(delay * 2, 0.5), MAX_BACKOFF)
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                await self._kill(child)
                return
            self.spare = child

    # -- start and supervision -----------------------------------------------------------
    async def start(self) -> None:
        self.active = await self._spawn()
        saved = self._load_state()
        if saved is not None:
            try:
                await self._apply(saved)
                log.info("serving the saved route table (version %s)", self.version)
            except (ProxyError, TableError) as exc:
                log.warning("the saved route table was not applied: %s", exc)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch()), loop.create_task(self._watchdog())]
        self._start_spare()

    def _load_state(self) -> dict[str, Any] | None:
        if not self.state:
            return None
        try:
            with open(self.state, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _save_state(self, table: dict[str, Any]) -> None:
        if not self.state:
            return
        tmp = f"{self.state}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(table, f, separators=(",", ":"))
            os.replace(tmp, self.state)
        except OSError as exc:
            log.warning("could not save the route table to %s: %s", self.state, exc)

    async def _watch(self) -> None:
        while not self._stopping:
            child = self.active
            if child is None:
                return
            code = await child.proc.wait()
            if self._stopping:
                return
            await self._failover(child, code)

    async def _watchdog(self) -> None:
        """Like systemd's WatchdogSec: an active proxy that stops answering is killed,
        and the exit watcher hands its sockets to the spare."""
        misses = 0
        while not self._stopping:
            await asyncio.sleep(WATCHDOG_PERIOD)
            child = self.active
            if child is None or not child.alive:
                misses = 0
                continue
            probe = ProxyClient(child.control, timeout=WATCHDOG_TIMEOUT)
            try:
                await probe.ping()
                misses = 0
            except ProxyError:
                misses += 1 if child is self.active else 0
            finally:
                await probe.close()
            if misses >= WATCHDOG_MISSES and child is self.active:
                log.warning("proxy pid %s did not answer %d pings; killing it",
                            child.proc.pid, misses)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                misses = 0

    def _backoff(self) -> float:
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < BURST_WINDOW] + [now]
        over = len(self._deaths) - FREE_RESTARTS
        return 0.0 if over <= 0 else min(0.1 * 2 ** (over - 1), MAX_BACKOFF)

    async def _failover(self, dead: Child, code: int) -> None:
        t0 = time.monotonic()
        how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        delay = self._backoff()
        if delay:
            await asyncio.sleep(delay)
        async with self._lock:
            await dead.client.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dead.control)
            child, self.spare = self.spare, None
            while child is None or not child.alive:
                if self._stopping:
                    return
                try:
                    child = await self._spawn()
                except RuntimeError as exc:
                    log.warning("proxy restart failed: %s", exc)
                    await asyncio.sleep(min(max(delay * 2, 0.5), MAX_BACKOFF))
            try:
                await asyncio.to_thread(import_sockets, child.control, self.held)
            except HandoffError as exc:
                log.warning("hand-over of the listening sockets failed: %s", exc)
            self.active = child
            if self.table is not None:
                try:
                    await child.client.set_table(self.table)
                except ProxyError as exc:
                    log.warning("route table push to the new proxy failed: %s", exc)
            self.failovers += 1
        await self._take_sockets()
        log.warning("proxy pid %s %s; pid %s took over its listening sockets and route "
                    "table in %.0f ms", dead.proc.pid, how, child.proc.pid,
                    (time.monotonic() - t0) * 1000)
        self._start_spare()

    # -- sockets ---------------------------------------------------------------------------
    async def _take_sockets(self) -> None:
        child = self.active
        if child is None:
            return
        try:
            fresh = await asyncio.to_thread(export_sockets, child.control)
        except HandoffError as exc:
            log.warning("could not take the proxy's listening sockets: %s", exc)
            return
        old, self.held = self.held, fresh
        for sock in old.values():
            sock.close()

    def _release_unused(self, table: dict[str, Any]) -> None:
        wanted = {(str(x.get("bind")), int(x.get("port") or 0))
                  for x in table.get("listeners", []) if isinstance(x, dict)}
        for key in [k for k in self.held if k not in wanted]:
            self.held.pop(key).close()

    # -- control operations ------------------------------------------------------------------
    async def ping(self) -> dict[str, Any]:
        child = self.active
        listeners: dict[str, int] = {}
        if child is not None and child.alive:
            with contextlib.suppress(ProxyError):
                listeners = (await child.client.ping()).get("listeners", {})
        return {"pid": os.getpid(), "version": self.version, "listeners": listeners,
                "proxy": child.proc.pid if child is not None else None,
                "spare": self.spare.proc.pid if self.spare is not None else None,
                "failovers": self.failovers}

    async def set_table(self, raw: Any) -> int:
        parse_table(raw)  # a bad table is refused before the proxy sees it
        async with self._lock:
            await self._apply(raw)
        self._save_state(raw)
        return self.version

    async def _apply(self, raw: dict[str, Any]) -> None:
        child = self.active
        if child is None:
            raise ControlError("no proxy is running")
        self._release_unused(raw)
        try:
            await child.client.set_table(raw)
        except ProxyRejected as exc:
            raise TableError(str(exc)) from exc
        except ProxyError as exc:
            raise ControlError(f"the proxy is unavailable: {exc}") from exc
        self.table = raw
        self.version = int(raw.get("version") or 0)
        await self._take_sockets()

    async def drain(self, endpoint_id: str, timeout: float) -> tuple[bool, int]:
        child = self.active
        if child is None:
            return True, 0
        client = ProxyClient(child.control, timeout=timeout + 10.0)
        try:
            resp = await client._call({"op": "drain", "endpoint": endpoint_id,
                                       "timeout": timeout})
        except ProxyError as exc:
            raise ControlError(f"the proxy is unavailable: {exc}") from exc
        finally:
            await client.close()
        return bool(resp["drained"]), int(resp["inflight"])

    def _serving(self) -> ProxyClient:
        """The serving proxy's control client (ControlError when there is none)."""
        child = self.active
        if child is None:
            raise ControlError("no proxy is running")
        return child.client

    async def metrics(self) -> dict[str, Any]:
        try:
            return await self._serving().metrics()
        except ProxyError as exc:
            raise ControlError(f"the proxy is unavailable: {exc}") from exc

    def current_table(self) -> Any:
        return self.table

    async def traces(self) -> list[Any]:
        try:
            return await self._serving().traces()
        except ProxyError as exc:
            raise ControlError(f"the proxy is unavailable: {exc}") from exc

    async def held_requests(self, since: int, wait: float) -> dict[str, Any]:
        try:
            return await self._serving().held(since, wait)
        except ProxyError as exc:
            raise ControlError(f"the proxy is unavailable: {exc}") from exc

    async def set_control_metrics(self, raw: Any) -> None:
        try:
            await self._serving().set_control_metrics(raw)
        except ProxyRejected as exc:
            raise ValueError(str(exc)) from exc
        except ProxyError as exc:
            raise ControlError(f"the proxy is unavailable: {exc}") from exc

    async def stop(self, grace: float) -> None:
        self._stopping = True
        for task in [*self._tasks, self._spare_task]:
            if task is not None:
                task.cancel()
        for sock in self.held.values():
            sock.close()
        self.held.clear()
        if self.spare is not None:
            await self._kill(self.spare)
            self.spare = None
        child = self.active
        if child is None or not child.alive:
            return
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.proc.wait(), grace + 5.0)
        except asyncio.TimeoutError:
            await self._kill(child)
        await child.client.close()
