"""Probe execution against real sockets/processes and threshold tracking."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mso.engines.local.probes import ProbeResult, ProbeSpec, ProbeTracker, resolve_port, run_probe

from .conftest import free_port

OK = ProbeResult(True, "ok")
BAD = ProbeResult(False, "connection refused")

pytestmark = pytest.mark.anyio


def test_readiness_starts_failing_and_needs_success_threshold() -> None:
    t = ProbeTracker("readiness", failure_threshold=3, success_threshold=2)
    assert not t.passing
    assert not t.feed(OK)
    assert t.feed(OK) and t.passing


def test_readiness_flips_after_failure_threshold_consecutive_failures() -> None:
    t = ProbeTracker("readiness", failure_threshold=3, success_threshold=1)
    t.feed(OK)
    t.feed(BAD)
    t.feed(BAD)
    t.feed(OK)  # interrupts the failure streak
    t.feed(BAD)
    t.feed(BAD)
    assert t.passing
    assert t.feed(BAD) and not t.passing
    assert t.last_detail == "connection refused"


def test_liveness_starts_passing_and_forces_success_threshold_one() -> None:
    t = ProbeTracker("liveness", failure_threshold=2, success_threshold=5)
    assert t.passing and t.success_threshold == 1
    t.feed(BAD)
    assert not t.exhausted
    t.feed(BAD)
    assert t.exhausted and not t.passing
    t.feed(OK)
    assert t.passing and not t.exhausted


def test_startup_starts_failing() -> None:
    t = ProbeTracker("startup", failure_threshold=1)
    assert not t.passing
    t.feed(OK)
    assert t.passing


def test_resolve_port_prefers_port_name_then_tcp_target_then_first() -> None:
    ports = {"http": 1000, "admin": 2000}
    assert resolve_port(ProbeSpec("http", "/", port_name="admin"), ports) == 2000
    assert resolve_port(ProbeSpec("tcp", "admin"), ports) == 2000
    assert resolve_port(ProbeSpec("tcp", "3000"), ports) == 3000
    assert resolve_port(ProbeSpec("http", "/"), ports) == 1000
    assert resolve_port(ProbeSpec("http", "/"), {}) is None


async def _serve(status: int) -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            seen.append(await r.readuntil(b"\r\n\r\n"))
        except asyncio.IncompleteReadError:  # a tcp probe connects and closes
            w.close()
            return
        w.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await w.drain()
        w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


@pytest.mark.parametrize("status,ok", [(200, True), (302, True), (404, False), (503, False)])
async def test_http_probe_status_classes(status: int, ok: bool) -> None:
    server, port, seen = await _serve(status)
    async with server:
        res = await run_probe(ProbeSpec("http", "/healthz", "web"), "127.0.0.1",
                              {"web": port}, {}, "/")
    assert res.ok is ok
    assert str(status) in res.detail
    assert seen[0].startswith(b"GET /healthz HTTP/1.1\r\n")


def _closed_port() -> int:
    return free_port()  # outside the ephemeral range: nobody else's port-0 bind gets it


async def test_tcp_probe_refused_and_accepted() -> None:
    res = await run_probe(ProbeSpec("tcp", "p"), "127.0.0.1", {"p": _closed_port()}, {}, "/")
    assert res == ProbeResult(False, "connection refused")
    server, port, _ = await _serve(200)
    async with server:
        assert (await run_probe(ProbeSpec("tcp", "p"), "127.0.0.1", {"p": port}, {}, "/")).ok


async def test_http_probe_times_out_on_silent_server() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        res = await run_probe(ProbeSpec("http", "/", timeout=0.2), "127.0.0.1", {"p": port},
                              {}, "/")
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the timeout left no cancel
        await asyncio.sleep(0.01)  # ... that a later await would receive
    assert res == ProbeResult(False, "timed out")


async def test_a_probe_cancelled_from_outside_stays_cancelled() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        probe = asyncio.ensure_future(run_probe(ProbeSpec("http", "/", timeout=5),
                                                "127.0.0.1", {"p": port}, {}, "/"))
        await asyncio.sleep(0.1)
        probe.cancel()  # a supervisor stopping: not a timeout, not a failed probe
        with pytest.raises(asyncio.CancelledError):
            await probe


async def test_http_probe_reads_a_split_status_line_and_closes_every_connection() -> None:
    """The probe is a bare protocol (no streams): a status line that arrives in pieces
    is still read whole, a server that closes without a word is an invalid response,
    and no probe leaves its connection open (1,000 replicas probed every second)."""
    closed = []

    async def slow(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(b"HTT")
        await w.drain()
        await asyncio.sleep(0.05)
        w.write(b"P/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
        await w.drain()
        closed.append(await r.read() == b"")  # the probe closed its end
        w.close()

    async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")  # read first: unread data would make it a reset
        w.close()

    for handler, ok, detail in ((slow, True, "HTTP GET / returned 204"),
                                (mute, False, "invalid HTTP response b''")):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            for _ in range(20):
                res = await run_probe(ProbeSpec("http", "/"), "127.0.0.1", {"p": port}, {},
                                      "/")
                assert res == ProbeResult(ok, detail)
    assert closed == [True] * 20


async def test_exec_probe_exit_status_env_and_cwd(tmp_path: Path) -> None:
    spec = ProbeSpec("exec", ["/bin/sh", "-c", 'test "$X" = yes && test -f here'], timeout=10)
    assert not (await run_probe(spec, "127.0.0.1", {}, {"X": "yes"}, str(tmp_path))).ok
    (tmp_path / "here").write_text("")
    assert (await run_probe(spec, "127.0.0.1", {}, {"X": "yes"}, str(tmp_path))).ok
    bad = await run_probe(ProbeSpec("exec", ["/bin/sh", "-c", "echo boom; exit 3"], timeout=10),
                          "127.0.0.1", {}, {}, str(tmp_path))
    assert bad == ProbeResult(False, "exec probe exited 3: boom")


async def test_exec_probe_timeout_kills_its_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    script = f"sleep 1000 & echo $! > {marker}; wait"
    start = time.monotonic()
    res = await run_probe(ProbeSpec("exec", ["/bin/sh", "-c", script], timeout=0.5),
                          "127.0.0.1", {}, {}, str(tmp_path))
    assert not res.ok and "timed out" in res.detail
    assert time.monotonic() - start < 20
    pid = int(marker.read_text())
    deadline = time.monotonic() + 20
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text(
            ).rsplit(")", 1)[1].split()[0]:
        assert time.monotonic() < deadline, "grandchild of exec probe survived the timeout"
        await asyncio.sleep(0.02)


def test_http_probe_under_uvloop() -> None:
    """The daemon runs on uvloop, whose transports are not asyncio's classes: a probe
    that only worked on asyncio's loop would time out every replica in production."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[ProbeResult]:
        server, port, _ = await _serve(200)
        async with server:
            return [await run_probe(ProbeSpec(kind, "/", "p"), "127.0.0.1", {"p": port}, {},
                                    "/") for kind in ("http", "tcp")]

    http, tcp = uvloop.run(main())
    assert http == ProbeResult(True, "HTTP GET / returned 200")
    assert tcp.ok


def test_probe_times_share_a_grid_so_many_replicas_wake_the_loop_together() -> None:
    from mso.engines.local.probes import PROBE_GRID, next_probe_time

    starts = [100.0 + i * 0.0137 for i in range(200)]  # 200 replicas started at random
    due = [next_probe_time(t, 1.0) for t in starts]
    for t, d in zip(starts, due):
        assert abs((d - t) - 1.0) <= PROBE_GRID / 2 + 1e-9  # still about every second
        assert abs(d / PROBE_GRID - round(d / PROBE_GRID)) < 1e-6
    assert len({round(d, 6) for d in due}) <= 1 + int(200 * 0.0137 / PROBE_GRID) + 1
    assert next_probe_time(5.0, 0.1) == 5.1  # short periods keep their exact pace
