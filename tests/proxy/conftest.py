"""Fixtures: real backend processes and a real proxy subprocess driven by ProxyClient."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from mso.proxy.client import ProxyClient
from mso.proxy.upstream import OUTBOX

HERE = Path(__file__).parent
BACKEND = str(HERE / "backend.py")


@pytest.fixture(autouse=True)
def _fresh_outbox() -> Iterator[None]:
    """Each test's loop starts with no end-of-batch writes left over from another one's."""
    OUTBOX.reset()
    yield
    OUTBOX.reset()


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll `cond` until it returns something truthy (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Backend:
    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, BACKEND, name, str(port)], stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> None:
        self.kill()
        deadline = time.monotonic() + 20
        while True:
            try:
                fresh = Backend(self.name, self.port)
                self.proc = fresh.proc
                return
            except ValueError:  # port still in TIME_WAIT-bound use: try again
                if time.monotonic() > deadline:
                    raise


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def start(name: str) -> Backend:
        b = Backend(name)
        started.append(b)
        return b

    yield start
    for b in started:
        b.kill()


class Proxy:
    """A `python -m mso.proxy` subprocess plus synchronous control helpers."""

    def __init__(self, workers: int = 1, extra: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.dir = tempfile.mkdtemp(prefix="msop")
        self.control = os.path.join(self.dir, "ctl.sock")
        self.stderr = open(os.path.join(self.dir, "stderr.log"), "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mso.proxy", "--control", self.control,
             "--workers", str(workers), *(extra or [])],
            stderr=self.stderr, start_new_session=True, env={**os.environ, **(env or {})},
        )
        wait_for(lambda: self._ping_ok(), 30, "proxy control socket")

    def _ping_ok(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"proxy exited: {self.log()}")
        try:
            self.call("ping")
            return True
        except Exception:
            return False

    def call(self, op: str, *args: Any) -> Any:
        async def run() -> Any:
            async with ProxyClient(self.control, timeout=60) as c:
                return await getattr(c, op)(*args)
        return asyncio.run(run())

    def set_table(self, table: dict[str, Any]) -> dict[str, int]:
        """Apply `table`; return the bound port of every listener."""
        self.call("set_table", table)
        ports: dict[str, int] = self.call("ping")["listeners"]
        return ports

    def log(self) -> str:
        self.stderr.flush()
        return Path(self.dir, "stderr.log").read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM and wait; fails if the proxy logged an unexpected exception."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        log = self.log()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        assert "Traceback" not in log, log[-3000:]
        return self.proc.returncode


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    p = Proxy()
    yield p
    p.stop()


def http_table(
    clusters: dict[str, dict[str, tuple[int, list[Backend]]]],
    routes: list[dict[str, Any]] | None = None,
    version: int = 1,
    extra_listeners: list[dict[str, Any]] | None = None,
    **listener_opts: Any,
) -> dict[str, Any]:
    """A TABLE with one `gw` HTTP listener on an ephemeral port."""
    first = next(iter(clusters))
    gw = {"name": "gw", "bind": "127.0.0.1", "port": 0, "mode": "http",
          "routes": routes or [{"host": None, "path": "/", "cluster": first}], **listener_opts}
    return {
        "version": version,
        "listeners": [gw, *(extra_listeners or [])],
        "clusters": {
            name: {"service": name, "balancer": "round_robin", "subsets": {
                sub: {"weight": w, "endpoints": [{"id": b.name, "address": b.address} for b in bs]}
                for sub, (w, bs) in subsets.items()}}
            for name, subsets in clusters.items()
        },
    }


def raw_request(port: int, data: bytes, timeout: float = 20.0) -> bytes:
    """Send raw bytes, read until the proxy closes (or timeout); return all received."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                piece = s.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            chunks.append(piece)
        return b"".join(chunks)
