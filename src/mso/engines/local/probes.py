"""Health probes (http, tcp, exec) and the pure threshold logic that interprets them.

``run_probe`` performs one check and never raises: the outcome is data
(:class:`ProbeResult`). ``ProbeTracker`` applies Kubernetes semantics: a probe flips to
failing after ``failure_threshold`` consecutive failures and back to passing after
``success_threshold`` consecutive successes; readiness and startup start out failing,
liveness starts out passing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from collections.abc import Coroutine
from typing import Any, Literal, cast

ProbeKind = Literal["http", "tcp", "exec"]
ProbeRole = Literal["startup", "readiness", "liveness"]


@dataclass(frozen=True)
class ProbeSpec:
    """One probe, already normalized by the spec layer."""

    kind: ProbeKind
    target: str | list[str]  # http: path; tcp: port name (or number); exec: argv
    port_name: str | None = None
    period: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    initial_delay: float = 0.0
    #: tcp: the connection must also stay open this long. A container's published port is
    #: accepted by Docker's proxy even while nothing listens inside, which then closes it.
    settle: float = 0.0


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one probe run; ``detail`` is human readable ("connection refused")."""

    ok: bool
    detail: str


def resolve_port(spec: ProbeSpec, ports: dict[str, int]) -> int | None:
    """Port to probe: ``port_name``, else (tcp) the target name/number, else the first port."""
    for name in (spec.port_name, spec.target if spec.kind == "tcp" else None):
        if isinstance(name, str) and name:
            if name in ports:
                return ports[name]
            if name.isdigit():
                return int(name)
    return next(iter(ports.values()), None)


#: Probe wake-ups land on a grid of this many seconds (for periods of at least
#: 4 grid steps): the probes of many replicas then run in the same event-loop iteration
#: instead of each waking the daemon on its own. With 100 replicas probed every second
#: that is 20 wake-ups a second instead of 100 (each a few more around the connection).
PROBE_GRID = 0.05


def next_probe_time(now: float, period: float, grid: float = PROBE_GRID) -> float:
    """When the next probe is due: `period` after `now`, moved to the nearest grid point
    (so within grid/2 of the period), or exactly `period` for short periods."""
    if grid <= 0 or period < 4 * grid:
        return now + period
    return round((now + period) / grid) * grid


async def probe_pause(period: float) -> None:
    """Sleep until the next probe of a loop probing every `period` seconds."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    await asyncio.sleep(max(0.0, next_probe_time(now, period) - now))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


async def run_probe(
    spec: ProbeSpec, host: str, ports: dict[str, int], env: dict[str, str], cwd: str
) -> ProbeResult:
    """Run one probe with ``spec.timeout``; never raises (except on cancellation)."""
    try:
        if spec.kind == "exec":
            return await _exec_probe(spec, env, cwd)
        port = resolve_port(spec, ports)
        if port is None:
            return ProbeResult(False, f"{spec.kind} probe has no port to check")
        if spec.kind == "tcp":
            return await _bounded(_tcp_probe(host, port, spec.settle),
                                  max(spec.timeout, spec.settle * 2))
        path = spec.target if isinstance(spec.target, str) else "/"
        return await _bounded(_http_probe(host, port, path or "/"), spec.timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a broken probe is a failed probe, never a dead supervisor
        return ProbeResult(False, _describe(exc))


async def _bounded(probe: Coroutine[Any, Any, ProbeResult], timeout: float) -> ProbeResult:
    """`await probe`, cancelled after `timeout` seconds (TimeoutError): `asyncio.timeout`
    made lean. Its context manager (a Timeout object, its state machine, a reschedule
    through `call_at`) was a fifth of a probe's Python time in the daemon; this is one
    timer handle and one closure."""
    task = asyncio.current_task()
    assert task is not None
    fired = False

    def expire() -> None:
        nonlocal fired
        fired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        result = await probe
        if fired:  # expired as it completed: as asyncio.timeout, keep the count right
            task.uncancel()
        return result
    except asyncio.CancelledError:
        if fired and task.uncancel() == 0:
            raise TimeoutError from None
        raise
    finally:
        handle.cancel()


class _FirstLine(asyncio.Protocol):
    """Sends one request and resolves ``done`` with the response's first line.

    A bare protocol rather than asyncio streams: a probe is one connection, one write and
    one read, and the StreamReader/StreamWriter pair (plus their futures and buffers) made
    up a quarter of a probe's cost in the daemon; with 1,000 replicas probed every second
    that is the difference the daemon's idle CPU shows.
    """

    LIMIT = 8192

    def __init__(self, request: bytes, done: asyncio.Future[bytes], settle: float = 0.0) -> None:
        self.request = request
        self.done = done
        self.buffer = b""
        self.settle = settle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.request:
            # uvloop's transports are not asyncio.WriteTransport subclasses: no isinstance.
            cast(asyncio.WriteTransport, transport).write(self.request)
        elif not self.settle:  # tcp probe: accepted is all it asks
            self._finish(b"")
        else:  # ... unless the peer must also keep the connection open a moment
            loop = asyncio.get_running_loop()
            loop.call_later(self.settle, self._finish, b"open")

    def data_received(self, data: bytes) -> None:
        if not self.request:  # a tcp probe: a greeting means someone listens
            self._finish(b"open")
            return
        self.buffer += data
        nl = self.buffer.find(b"\n")
        if nl != -1:
            self._finish(self.buffer[:nl + 1])
        elif len(self.buffer) > self.LIMIT:
            self._finish(self.buffer)

    def eof_received(self) -> bool:
        self._finish(self.buffer)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is not None:
                self.done.set_exception(exc)
            else:
                self.done.set_result(self.buffer)

    def _finish(self, result: bytes) -> None:
        if not self.done.done():
            self.done.set_result(result)


async def _exchange(host: str, port: int, request: bytes, settle: float = 0.0) -> bytes:
    """Connect, send `request` (if any), return the first line of the answer; the
    connection is always closed."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    transport, _ = await loop.create_connection(lambda: _FirstLine(request, done, settle),
                                                host, port)
    try:
        return await done
    finally:
        transport.close()


async def _tcp_probe(host: str, port: int, settle: float = 0.0) -> ProbeResult:
    if settle and await _exchange(host, port, b"", settle) != b"open":
        return ProbeResult(False, f"tcp {host}:{port} closed at once (nothing listens "
                                  "inside the container yet)")
    if not settle:
        await _exchange(host, port, b"")
    return ProbeResult(True, f"tcp {host}:{port} accepted")


async def _http_probe(host: str, port: int, path: str) -> ProbeResult:
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: mso-probe\r\n"
               "Accept: */*\r\nConnection: close\r\n\r\n")
    line = await _exchange(host, port, request.encode("latin-1"))
    parts = line.decode("latin-1", "replace").split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return ProbeResult(False, f"invalid HTTP response {line[:80]!r}")
    status = int(parts[1])
    ok = 200 <= status < 400
    return ProbeResult(ok, f"HTTP GET {path} returned {status}")


async def _exec_probe(spec: ProbeSpec, env: dict[str, str], cwd: str) -> ProbeResult:
    argv = spec.target if isinstance(spec.target, list) else ["/bin/sh", "-c", spec.target]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)
    try:
        async with asyncio.timeout(spec.timeout):
            output, _ = await proc.communicate()
    except (asyncio.TimeoutError, TimeoutError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        await proc.wait()
        return ProbeResult(False, f"exec probe timed out after {spec.timeout:g}s")
    except asyncio.CancelledError:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        raise
    text = output.decode("utf-8", "replace").strip()[-200:]
    if proc.returncode == 0:
        return ProbeResult(True, "exec probe exited 0")
    return ProbeResult(False, f"exec probe exited {proc.returncode}" + (f": {text}" if text else ""))


class ProbeTracker:
    """Threshold state of one probe (pure, no I/O)."""

    def __init__(self, role: ProbeRole, failure_threshold: int = 3,
                 success_threshold: int = 1) -> None:
        if failure_threshold < 1 or success_threshold < 1:
            raise ValueError("probe thresholds must be >= 1")
        self.role = role
        self.failure_threshold = failure_threshold
        # Kubernetes requires 1 for liveness and startup probes.
        self.success_threshold = success_threshold if role == "readiness" else 1
        self.passing = role == "liveness"
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last_detail = ""

    @classmethod
    def for_spec(cls, role: ProbeRole, spec: ProbeSpec) -> ProbeTracker:
        """Tracker configured from a probe spec."""
        return cls(role, spec.failure_threshold, spec.success_threshold)

    def feed(self, result: ProbeResult) -> bool:
        """Record one result; return True when :attr:`passing` changed."""
        self.last_detail = result.detail
        before = self.passing
        if result.ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            if self.consecutive_successes >= self.success_threshold:
                self.passing = True
        else:
            self.consecutive_failures += 1
            self.consecutive_successes = 0
            if self.consecutive_failures >= self.failure_threshold:
                self.passing = False
        return self.passing != before

    @property
    def exhausted(self) -> bool:
        """Failures reached the threshold (liveness/startup: the container must be killed)."""
        return self.consecutive_failures >= self.failure_threshold

    def reset(self) -> None:
        """Back to the initial state (after a restart)."""
        self.passing = self.role == "liveness"
        self.consecutive_failures = 0
        self.consecutive_successes = 0
