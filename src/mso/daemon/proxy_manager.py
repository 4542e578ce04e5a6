"""Keeps mso's proxy process running and fed with the current route table.

The proxy lives in its own process and session so it keeps serving its last table while
the daemon is down. A restarted daemon re-adopts it when the recorded pid and process
start time still match and it answers a ping; otherwise it starts a fresh one.

The data plane is supervised like systemd supervises a socket-activated service:
* The daemon holds a duplicate of every listening socket the proxy has bound (taken over
  `mso.proxy.handoff` after each table push), so the sockets outlive the proxy process.
  When the proxy dies, even by SIGKILL, clients are not refused: their connections wait
  in the kernel's accept backlog.
* A spare proxy is kept started and idle (no listeners, no table), holding copies of
  the listening sockets too, so they outlive the daemon and the proxy dying together (a
  new daemon then makes the spare serve: it is adopted before anything else). The moment the
  active proxy exits (a pidfd says so at once) the spare is handed the sockets and the
  current table, and accepts the waiting connections; a new spare is then started.
  Starting a Python proxy takes about 100 ms, so a warm spare is what makes a failover
  take a few milliseconds instead. Without a spare (it died too) a new proxy is started
  and given the same sockets and table.
* Like systemd's start limit, five restarts within 10 s are immediate; more back off
  (0.1 s doubling to 10 s), so a proxy that crashes on every table does not spin.
* A proxy that is alive but does not answer its control socket for three pings in a row
  (hung, or SIGSTOPped) is killed, like systemd's watchdog, and the spare takes over.
A dead proxy with a dead daemon is restored by the next `mso up` (the daemon starts a
proxy when the recorded one is gone); the sockets are bound again then.

Each proxy gets its own control socket path (`proxy.sock`, then `proxy.sock.N`); the
active one's path is recorded with its pid so a restarted daemon finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from mso.errors import Unavailable
from mso.engines.local.process import ProcessRef, is_same_process, spawn, wait_exit
from mso.proxy.client import ProxyClient, ProxyUnavailable
from mso.proxy.handoff import HandoffError, Key, export_sockets, import_sockets
from mso.store.db import Store

log = logging.getLogger("mso.daemon.proxy")

_META_KEY = "proxy_process"
_SPARE_KEY = "proxy_spare"
FREE_RESTARTS = 5  # restarts within BURST_WINDOW seconds that wait for nothing
BURST_WINDOW = 10.0
MAX_BACKOFF = 10.0
WATCHDOG_PERIOD = 1.0  # the serving proxy is pinged this often,
WATCHDOG_TIMEOUT = 2.0  # each ping may take this long,
WATCHDOG_MISSES = 3  # and this many unanswered in a row mean it is hung


class _Proxy:
    """One proxy process and the control socket it serves."""

    def __init__(self, ref: ProcessRef, control: Path) -> None:
        self.ref = ref
        self.control = control
        self.client = ProxyClient(str(control))

    def record(self) -> str:
        return json.dumps({"pid": self.ref.pid, "start_time": self.ref.start_time,
                           "control": str(self.control)})


def _kill(ref: ProcessRef) -> None:
    if is_same_process(ref):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(ref.pid, signal.SIGKILL)


class ProxyManager:
    """Owns the proxy process (and its spare) and pushes route tables to it."""

    def __init__(self, store: Store, socket_path: Path, log_dir: Path, env: dict[str, str],
                 workers: int = 1, events: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.socket_path = socket_path
        self.log_dir = log_dir
        self.env = env
        self.workers = workers
        self.events = events or (lambda kind, message: store.add_event(kind, message))
        self.active: _Proxy | None = None
        self.spare: _Proxy | None = None
        self.held: dict[Key, socket.socket] = {}
        self._table: dict[str, Any] | None = None  # the last table applied (unversioned)
        self._last_table: dict[str, Any] | None = None
        self._version = int(store.get_meta("proxy_table_version") or 0)
        self._lock = asyncio.Lock()
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self._spare_task: asyncio.Task[None] | None = None
        self._spare_watch: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._deaths: list[float] = []
        self.restarts = 0

    # -- records: best effort (a full disk must not stop a failover or a push) ----------
    def _meta_set(self, key: str, value: str) -> None:
        with contextlib.suppress(Unavailable):
            self.store.set_meta(key, value)

    def _meta_delete(self, key: str) -> None:
        with contextlib.suppress(Unavailable):
            self.store.delete_meta(key)

    # -- compatibility accessors -----------------------------------------------------
    @property
    def ref(self) -> ProcessRef | None:
        return self.active.ref if self.active else None

    @property
    def client(self) -> ProxyClient:
        if self.active is None:
            return ProxyClient(str(self.socket_path))
        return self.active.client

    async def ensure_running(self) -> None:
        """Adopt the recorded proxy if it is alive and answers, else start one; then
        take its sockets and start a spare."""
        recorded = [self._recorded(key) for key in (_META_KEY, _SPARE_KEY)]
        adopted = None
        for role, candidate in zip(("proxy", "spare proxy"), recorded):
            if adopted is None and candidate is not None and is_same_process(candidate.ref) \
                    and await self._answers(candidate, 2.0):
                # The serving proxy if it lives; else the spare, which holds the listening
                # sockets (the daemon gave it copies), so clients waited in the backlog
                # while both the proxy and the daemon were down, and it takes over now.
                adopted = candidate
                log.info("adopted the %s, pid %s", role, candidate.ref.pid)
            elif candidate is not None:
                _kill(candidate.ref)
        self._meta_delete(_SPARE_KEY)
        if adopted is None:
            adopted = await self._start(self.socket_path)
        self._activate(adopted)
        await self._take_sockets()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())
        self._pinger = asyncio.get_running_loop().create_task(self._watchdog())
        self._start_spare()

    def _recorded(self, key: str) -> _Proxy | None:
        raw = self.store.get_meta(key)
        if not raw:
            return None
        data = json.loads(raw)
        return _Proxy(ProcessRef(int(data["pid"]), int(data["start_time"])),
                      Path(data.get("control") or self.socket_path))

    async def _answers(self, proxy: _Proxy, timeout: float) -> bool:
        try:
            await asyncio.wait_for(proxy.client.ping(), timeout)
            return True
        except (ProxyUnavailable, asyncio.TimeoutError, OSError):
            return False

    def _new_control(self) -> Path:
        for n in range(1, 1000):
            path = self.socket_path.with_name(f"{self.socket_path.name}.{n}")
            if not path.exists() and (self.active is None or path != self.active.control):
                return path
        raise RuntimeError(f"no free control socket name beside {self.socket_path}")

    async def _start(self, control: Path) -> _Proxy:
        control.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "mso.proxy", "--control", str(control),
                "--workers", str(self.workers)]
        ref = spawn(argv, env=self.env, cwd="/",
                    stdout_path=self.log_dir / "proxy.out",
                    stderr_path=self.log_dir / "proxy.err")
        proxy = _Proxy(ref, control)
        for _ in range(200):
            if await self._answers(proxy, 1.0):
                return proxy
            if not is_same_process(ref):
                break
            await asyncio.sleep(0.02)
        _kill(ref)
        raise RuntimeError("the proxy process did not start; see "
                           f"{self.log_dir / 'proxy.err'}")

    def _activate(self, proxy: _Proxy) -> None:
        self.active = proxy
        self._last_table = None
        self._meta_set(_META_KEY, proxy.record())

    # -- sockets -----------------------------------------------------------------------
    async def _take_sockets(self) -> None:
        """Hold duplicates of the active proxy's listening sockets (and only those)."""
        if self.active is None or self.workers > 1:  # workers bind their own sockets
            return
        try:
            fresh = await asyncio.to_thread(export_sockets, str(self.active.control))
        except HandoffError as exc:
            log.warning("could not take the proxy's listening sockets: %s", exc)
            return
        old, self.held = self.held, fresh
        for sock in old.values():
            sock.close()
        await self._arm_spare()

    async def _arm_spare(self) -> None:
        """Give the spare copies of the listening sockets too, so they outlive the daemon
        and the proxy dying together: clients wait in the backlog until a new daemon
        (started by the keeper) makes the spare serve."""
        spare = self.spare
        if spare is None or self.workers > 1:
            return
        try:
            await asyncio.to_thread(import_sockets, str(spare.control), self.held)
        except HandoffError as exc:
            log.warning("could not give the spare proxy the listening sockets: %s", exc)

    def _release_unused(self, table: dict[str, Any]) -> None:
        """Close our copies of sockets the next table no longer listens on, before it is
        pushed: the proxy may bind the same port again with another address."""
        wanted = {(str(x.get("bind")), int(x.get("port") or 0))
                  for x in table.get("listeners", []) if isinstance(x, dict)}
        for key in [k for k in self.held if k not in wanted]:
            self.held.pop(key).close()

    # -- supervision -------------------------------------------------------------------
    def _start_spare(self) -> None:
        if self._stopping or self.workers > 1:
            return
        if self._spare_task is None or self._spare_task.done():
            self._spare_task = asyncio.get_running_loop().create_task(self._make_spare())

    async def _make_spare(self) -> None:
        delay = 0.0
        while not self._stopping and self.spare is None:
            try:
                proxy = await self._start(self._new_control())
            except RuntimeError as exc:
                log.warning("spare proxy: %s", exc)
                delay = min(max(delay * 2, 0.5), MAX_BACKOFF)
                await asyncio.sleep(delay)
                continue
            if self._stopping:
                _kill(proxy.ref)
                return
            self.spare = proxy
            self._meta_set(_SPARE_KEY, proxy.record())
            await self._arm_spare()
            self._spare_watch = asyncio.get_running_loop().create_task(self._watch_spare(proxy))

    async def _watch_spare(self, proxy: _Proxy) -> None:
        await wait_exit(proxy.ref)
        if self.spare is proxy:  # died while idle: start another
            self.spare = None
            self._meta_delete(_SPARE_KEY)
            if not self._stopping:
                log.warning("spare proxy pid %s exited; starting another", proxy.ref.pid)
                self._start_spare()

    async def _watchdog(self) -> None:
        """A proxy that stops answering (hung, or SIGSTOPped) is killed, like systemd's
        WatchdogSec: the exit watcher then hands its sockets to the spare."""
        misses = 0
        while not self._stopping:
            await asyncio.sleep(WATCHDOG_PERIOD)
            proxy = self.active
            if proxy is None or not is_same_process(proxy.ref):
                misses = 0
                continue
            # A fresh connection each time: a pooled one may be held by a slow drain.
            client = ProxyClient(str(proxy.control), timeout=WATCHDOG_TIMEOUT)
            try:
                await client.ping()
                misses = 0
            except ProxyUnavailable:
                misses += 1 if proxy is self.active else 0
            finally:
                await client.close()
            if misses >= WATCHDOG_MISSES and proxy is self.active:
                log.warning("proxy pid %s did not answer %d pings; killing it",
                            proxy.ref.pid, misses)
                self.events("proxy.hung", f"proxy pid {proxy.ref.pid} did not answer "
                            f"{misses} pings in a row ({WATCHDOG_TIMEOUT:g}s each): killed; "
                            "the spare takes over")
                _kill(proxy.ref)
                misses = 0

    async def _watch(self) -> None:
        while not self._stopping:
            proxy = self.active
            if proxy is None:
                return
            status = await wait_exit(proxy.ref)
            if self._stopping:
                return
            await self._failover(proxy, status)

    def _backoff(self) -> float:
        """Like systemd's start limit: a few quick restarts are free, then they back off."""
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < BURST_WINDOW] + [now]
        over = len(self._deaths) - FREE_RESTARTS
        return 0.0 if over <= 0 else min(0.1 * 2 ** (over - 1), MAX_BACKOFF)

    async def _failover(self, dead: _Proxy, status: int | None) -> None:
        t0 = time.monotonic()
        how = (f"killed by signal {-status}" if status is not None and status < 0
               else f"exit status {status}" if status is not None else "exited")
        delay = self._backoff()
        log.warning("proxy pid %s %s; taking over (backoff %.1fs)", dead.ref.pid, how, delay)
        if delay:
            await asyncio.sleep(delay)
        async with self._lock:
            with contextlib.suppress(Exception):
                await dead.client.close()
            dead.control.unlink(missing_ok=True)
            proxy, self.spare = self.spare, None
            self._meta_delete(_SPARE_KEY)
            if proxy is None or not is_same_process(proxy.ref):
                while not self._stopping:
                    try:
                        proxy = await self._start(self._new_control())
                        break
                    except RuntimeError as exc:
                        log.warning("proxy restart failed: %s", exc)
                        await asyncio.sleep(min(max(delay * 2, 0.5), MAX_BACKOFF))
                if proxy is None or self._stopping:
                    return
            try:
                await asyncio.to_thread(import_sockets, str(proxy.control), self.held)
            except HandoffError as exc:
                log.warning("hand-over of the listening sockets failed: %s", exc)
            self._activate(proxy)
            table = self._table
            if table is not None:
                try:
                    await self._apply(table)
                except Exception as exc:  # the reconcile loop pushes again and reports
                    log.warning("route table push to the new proxy failed: %s", exc)
            self.restarts += 1
        await self._take_sockets()
        took = (time.monotonic() - t0) * 1000
        self.events("proxy.restarted",
                    f"proxy pid {dead.ref.pid} {how}; pid {proxy.ref.pid} took over its "
                    f"listening sockets and route table in {took:.0f} ms")
        self._start_spare()

    async def push(self, table: dict[str, Any]) -> bool:
        """Send `table` if it changed since the last push; True when it was applied."""
        async with self._lock:
            if table == self._last_table:
                return False
            self._release_unused(table)
            await self._apply(table)
        await self._take_sockets()
        return True

    async def _apply(self, table: dict[str, Any]) -> None:
        self._version += 1
        versioned = dict(table, version=self._version)
        await self.client.set_table(versioned)
        self._last_table = self._table = table
        self._meta_set("proxy_table_version", str(self._version))

    async def drain(self, endpoint: str, timeout: float) -> bool:
        # Drains wait for in-flight work, so each gets its own control connection: one
        # slow drain must not hold up the others or the route-table pushes.
        client = ProxyClient(str(self.active.control if self.active else self.socket_path))
        try:
            return await client.drain(endpoint, timeout)
        except ProxyUnavailable:
            return True  # no proxy, no traffic to wait for
        finally:
            await client.close()

    async def metrics(self) -> dict[str, Any]:
        return await self.client.metrics()

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._watcher, self._spare_task, self._spare_watch, self._pinger):
            if task is not None:
                task.cancel()
        for sock in self.held.values():
            sock.close()
        self.held.clear()
        if self.spare is not None:
            await self._terminate(self.spare)
            self.spare = None
        self._meta_delete(_SPARE_KEY)
        if self.active is None:
            return
        await self.active.client.close()
        await self._terminate(self.active)
        self._meta_delete(_META_KEY)

    @staticmethod
    async def _terminate(proxy: _Proxy) -> None:
        ref = proxy.ref
        if not is_same_process(ref):
            return
        try:
            os.killpg(ref.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        # Wait for the exit itself (a pidfd), not for /proc/PID to go: the proxy is our
        # child, so it stays there as a zombie until it is reaped, which waiting does.
        try:
            await asyncio.wait_for(wait_exit(ref), 3.0)
        except (asyncio.TimeoutError, TimeoutError):
            try:
                os.killpg(ref.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(wait_exit(ref), 5.0)
