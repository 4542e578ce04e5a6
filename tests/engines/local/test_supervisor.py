"""ReplicaSupervisor against real processes, sockets and probes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mso.engines.local.probes import ProbeSpec
from mso.engines.local.process import ProcessRef, is_alive, parse_stat
from mso.engines.local.replica import ReplicaSpec
from mso.engines.local.states import ReplicaState as S
from mso.engines.local.supervisor import ReplicaSupervisor

from .conftest import free_port, until

pytestmark = pytest.mark.anyio

SERVER = r'''
import http.server, os, signal, socketserver, sys, subprocess
d = os.environ["STATE_DIR"]
if os.environ.get("IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def term(*_):
        open(os.path.join(d, "term"), "w").write("1")
        sys.exit(0)
    signal.signal(signal.SIGTERM, term)
if os.environ.get("GRANDCHILD"):
    p = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    open(os.path.join(d, "grandchild"), "w").write(str(p.pid))
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = os.path.exists(os.path.join(d, self.path.strip("/")))
        self.send_response(200 if ok else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
print("listening", os.environ["PORT"], flush=True)
socketserver.TCPServer.allow_reuse_address = True
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
'''


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.transitions: list[tuple[S, S, str, ProcessRef | None]] = []

    def on_transition(self, rid: str, old: S, new: S, reason: str, ref: ProcessRef | None) -> None:
        self.transitions.append((old, new, reason, ref))
        self.events.append(("state", new))

    def on_ready(self, rid: str, ready: bool) -> None:
        self.events.append(("ready", ready))

    def states(self) -> list[S]:
        return [t[1] for t in self.transitions]

    def count(self, state: S) -> int:
        return self.states().count(state)


def make_spec(tmp_path: Path, code: str = SERVER, **kw: Any) -> ReplicaSpec:
    script = tmp_path / "app.py"
    script.write_text(code)
    port = free_port()
    env = {"PATH": os.environ["PATH"], "PORT": str(port), "STATE_DIR": str(tmp_path),
           "MSO_INSTANCE": uuid.uuid4().hex, **kw.pop("extra_env", {})}
    base = ReplicaSpec(id="web-1", service="web", release=1, argv=[sys.executable, str(script)],
                       env=env, cwd=str(tmp_path), log_dir=tmp_path / "logs",
                       ports={"http": port}, backoff=(0.1, 1.0, 60.0), stop_grace=10.0)
    return replace(base, **kw)


def http_probe(path: str, **kw: Any) -> ProbeSpec:
    return ProbeSpec(**{"kind": "http", "target": path, "port_name": "http", "period": 0.1,
                        "timeout": 3.0, "failure_threshold": 2, "success_threshold": 1, **kw})


def supervisor(spec: ReplicaSpec, rec: Recorder, **kw: Any) -> ReplicaSupervisor:
    return ReplicaSupervisor(spec, on_transition=rec.on_transition, on_ready=rec.on_ready, **kw)


def dead(pid: int) -> bool:
    try:
        return parse_stat(Path(f"/proc/{pid}/stat").read_text())[0] in "ZX"
    except OSError:
        return True


async def test_no_probe_replica_becomes_ready_once_port_accepts(tmp_path: Path) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path), rec)
    sup.start()
    try:
        await until(lambda: sup.state == S.READY, what="READY")
        assert rec.states() == [S.STARTING, S.RUNNING, S.READY]
        first = rec.transitions[0]
        assert first[3] is not None and first[3] == sup.ref  # ref handed over at spawn
        assert rec.events[-1] == ("ready", True)
        log = (tmp_path / "logs" / "web-1.stdout.log").read_text()
        assert log.startswith("listening ")  # server printed before bind => port checked
        assert os.getpgid(sup.ref.pid) == sup.ref.pid
    finally:
        await sup.stop()
    assert sup.state == S.STOPPED


async def test_sigkilled_replica_restarts_with_doubling_backoff(tmp_path: Path) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, backoff=(0.2, 5.0, 60.0)), rec)
    sup.start()
    try:
        for n, delay in ((1, "0.2"), (2, "0.4")):
            await until(lambda: sup.state == S.READY, what="READY")
            assert sup.ref is not None
            old = sup.ref
            os.kill(old.pid, signal.SIGKILL)
            await until(lambda: sup.restarts == n and sup.state == S.READY, what="restart")
            assert sup.ref != old
            backoff = [t for t in rec.transitions if t[1] == S.BACKOFF][-1]
            assert backoff[2] == f"killed by signal 9 (SIGKILL); restarting in {delay}s"
        assert ("ready", False) in rec.events
    finally:
        await sup.stop()


async def test_liveness_failure_kills_and_restarts(tmp_path: Path) -> None:
    (tmp_path / "live").write_text("")
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, liveness=http_probe("/live")), rec)
    sup.start()
    try:
        await until(lambda: sup.state == S.READY, what="READY")
        first = sup.ref
        kills_before = rec.count(S.BACKOFF)  # a slow bind may already have cost a restart
        (tmp_path / "live").unlink()
        await until(lambda: rec.count(S.BACKOFF) > kills_before, what="liveness kill")
        reason = [t[2] for t in rec.transitions if t[1] == S.BACKOFF][kills_before]
        assert reason.startswith("liveness probe failed 2 times: HTTP GET /live returned 500")
        (tmp_path / "live").write_text("")
        await until(lambda: sup.restarts > kills_before and sup.state == S.READY,
                    what="restarted")
        assert sup.ref != first
    finally:
        await sup.stop()


async def test_readiness_failure_marks_not_ready_without_restart(tmp_path: Path) -> None:
    (tmp_path / "ready").write_text("")
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, readiness=http_probe("/ready")), rec)
    sup.start()
    try:
        await until(lambda: sup.state == S.READY, what="READY")
        ref = sup.ref
        (tmp_path / "ready").unlink()
        await until(lambda: sup.state == S.RUNNING, what="not ready")
        assert rec.events[-1] == ("ready", False)
        assert "readiness probe failed 2 times" in rec.transitions[-1][2]
        (tmp_path / "ready").write_text("")
        await until(lambda: sup.state == S.READY, what="ready again")
        assert sup.ref == ref and sup.restarts == 0
    finally:
        await sup.stop()


async def test_a_replica_never_ready_says_why_once_per_failing_streak(tmp_path: Path) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, readiness=http_probe("/ready")), rec)
    sup.start()
    try:
        await until(lambda: "readiness probe failed" in sup.last_reason, what="the reason")
        assert sup.state == S.RUNNING and sup.restarts == 0
        said = [t for t in rec.transitions if "readiness probe failed" in t[2]]
        assert len(said) == 1 and "2 times" in said[0][2]
        (tmp_path / "ready").write_text("")
        await until(lambda: sup.state == S.READY, what="ready at last")
        assert len([t for t in rec.transitions if "readiness probe failed" in t[2]]) == 1
    finally:
        await sup.stop()


async def test_startup_probe_gates_running_state(tmp_path: Path) -> None:
    rec = Recorder()
    spec = make_spec(tmp_path, startup=http_probe("/started", failure_threshold=10_000),
                     readiness=http_probe("/started"))
    sup = supervisor(spec, rec)
    sup.start()
    try:
        await until(lambda: (tmp_path / "logs" / "web-1.stdout.log").exists() and
                    "listening" in (tmp_path / "logs" / "web-1.stdout.log").read_text())
        await asyncio.sleep(0.3)  # several probe periods: nothing may advance
        assert sup.state == S.STARTING
        (tmp_path / "started").write_text("")
        await until(lambda: sup.state == S.READY, what="READY")
        assert rec.states() == [S.STARTING, S.RUNNING, S.READY]
    finally:
        await sup.stop()


async def test_stop_drains_before_signalling(tmp_path: Path) -> None:
    rec = Recorder()

    async def drain(rid: str) -> None:
        assert sup.ref is not None and is_alive(sup.ref)
        assert not (tmp_path / "term").exists()
        rec.events.append(("drain", rid))
        await asyncio.sleep(0.05)
        assert not (tmp_path / "term").exists()  # no signal while draining

    sup = supervisor(make_spec(tmp_path), rec, drain=drain)
    sup.start()
    await until(lambda: sup.state == S.READY, what="READY")
    await sup.stop("scale down")
    assert rec.events[-4:] == [("state", S.STOPPING), ("ready", False), ("drain", "web-1"),
                               ("state", S.STOPPED)]
    assert (tmp_path / "term").exists()  # got the stop signal after the drain
    assert rec.transitions[-1][2] == "scale down"
    await sup.stop()  # idempotent
    assert rec.count(S.STOPPED) == 1


async def test_drain_ends_when_the_process_exits_meanwhile(tmp_path: Path) -> None:
    """A drain waits for the replica's connections; once the process is gone there are
    none left, so the stop goes on at once instead of at the drain's timeout."""
    rec = Recorder()
    draining = asyncio.Event()
    cancelled = asyncio.Event()

    async def drain(rid: str) -> None:
        draining.set()
        try:
            await asyncio.sleep(3600)  # connections that never close
        except asyncio.CancelledError:
            cancelled.set()
            raise

    sup = supervisor(make_spec(tmp_path), rec, drain=drain, drain_timeout=3600)
    sup.start()
    await until(lambda: sup.state == S.READY, what="READY")
    assert sup.ref is not None
    stopping = asyncio.ensure_future(sup.stop("scale down"))
    await asyncio.wait_for(draining.wait(), 10)
    os.kill(sup.ref.pid, signal.SIGKILL)
    await asyncio.wait_for(stopping, 10)  # not the drain's hour
    assert cancelled.is_set() and sup.state == S.STOPPED
    assert not (tmp_path / "term").exists()  # nothing left to signal


async def test_no_drain_for_a_replica_that_already_died(tmp_path: Path) -> None:
    rec = Recorder()
    calls: list[str] = []

    async def drain(rid: str) -> None:
        calls.append(rid)
        await asyncio.sleep(3600)

    spec = make_spec(tmp_path, code="raise SystemExit(3)", backoff=(3600.0, 3600.0, 60.0))
    sup = supervisor(spec, rec, drain=drain, drain_timeout=3600)
    sup.start()
    await until(lambda: sup.state == S.BACKOFF, what="BACKOFF")
    await asyncio.wait_for(sup.stop("mso down"), 10)
    assert calls == [] and sup.state == S.STOPPED


async def test_sigterm_ignored_then_sigkill_after_grace(tmp_path: Path) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, stop_grace=0.5, extra_env={"IGNORE_TERM": "1"}), rec)
    sup.start()
    await until(lambda: sup.state == S.READY, what="READY")
    assert sup.ref is not None
    pid = sup.ref.pid
    t0 = time.monotonic()
    await asyncio.wait_for(sup.stop(), 30)
    assert time.monotonic() - t0 >= 0.5
    assert dead(pid)
    assert sup.state == S.STOPPED


@pytest.mark.parametrize("use_cgroup", [False, True])
async def test_grandchild_in_new_session_killed_on_stop(tmp_path: Path, use_cgroup: bool) -> None:
    from mso.engines.local.cgroups import CgroupManager

    mgr = CgroupManager(f"mso-test/{uuid.uuid4().hex[:8]}") if use_cgroup else None
    if mgr is not None and not mgr.available()[0]:
        pytest.skip(f"cgroups unavailable: {mgr.available()[1]}")
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, extra_env={"GRANDCHILD": "1"}), rec, cgroups=mgr)
    sup.start()
    try:
        await until(lambda: sup.state == S.READY, what="READY")
        gc = int((tmp_path / "grandchild").read_text())
        assert os.getsid(gc) != sup.ref.pid if sup.ref else False
        if sup.cgroup is not None:
            assert gc in sup.cgroup.pids()
        group = sup.cgroup
        await sup.stop()
        await until(lambda: dead(gc), what="grandchild killed")
        if group is not None and group.dirs:
            assert all(not d.exists() for d in group.dirs.values())  # removed on stop
    finally:
        if mgr is not None:
            mgr.cleanup()


async def test_detach_leaves_process_running(tmp_path: Path) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path), rec)
    sup.start()
    await until(lambda: sup.state == S.READY, what="READY")
    assert sup.ref is not None
    await sup.detach()
    assert is_alive(sup.ref) and sup.state == S.READY
    os.killpg(sup.ref.pid, signal.SIGKILL)


OLD_DAEMON = """
import json, sys, time
from pathlib import Path
from mso.engines.local.process import spawn
spec = json.loads(sys.argv[1])
ref = spawn(spec["argv"], env=spec["env"], cwd=spec["cwd"],
            stdout_path=Path(spec["out"]), stderr_path=Path(spec["err"]))
print(ref.pid, ref.start_time, flush=True)
time.sleep(1000)
"""


async def test_adopt_process_of_killed_daemon(tmp_path: Path) -> None:
    import json

    (tmp_path / "ready").write_text("")
    spec = make_spec(tmp_path, readiness=http_probe("/ready"))
    arg = json.dumps({"argv": spec.argv, "env": spec.process_env(), "cwd": spec.cwd,
                      "out": str(spec.stdout_path), "err": str(spec.stderr_path)})
    daemon = await asyncio.create_subprocess_exec(sys.executable, "-c", OLD_DAEMON, arg,
                                                  stdout=asyncio.subprocess.PIPE)
    assert daemon.stdout is not None
    pid, start = map(int, (await asyncio.wait_for(daemon.stdout.readline(), 30)).split())
    daemon.kill()  # kill -9 of the control plane
    await daemon.wait()
    ref = ProcessRef(pid, start)

    def listening() -> bool:
        import socket
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", spec.ports["http"])) == 0

    # Adopted once it serves, as after a real crash: a replica adopted while it still
    # starts up may fail two 0.1 s probes first (another transition, not what is tested).
    await until(listening, what="replica listening")
    assert is_alive(ref)
    rec = Recorder()
    new = supervisor(spec, rec)
    new.adopt(ref)
    try:
        await until(lambda: new.state == S.READY, what="adopted READY")
        assert rec.states() == [S.RUNNING, S.READY]
        assert rec.transitions[0][2] == f"adopted pid {ref.pid}"
        os.kill(ref.pid, signal.SIGKILL)  # exit status of a non-child is unknown
        await until(lambda: new.restarts == 1 and new.state == S.READY, what="respawn")
        backoff = [t[2] for t in rec.transitions if t[1] == S.BACKOFF][0]
        assert backoff.startswith("exited (status unknown")
    finally:
        await new.stop()
    await until(lambda: dead(ref.pid))


async def test_adopting_a_reused_pid_does_not_touch_it(tmp_path: Path) -> None:
    rec = Recorder()
    me = parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())[1]
    sup = supervisor(make_spec(tmp_path, restart="never"), rec)
    sup.adopt(ProcessRef(os.getpid(), me + 1))  # same pid, different start time
    await until(lambda: sup.state == S.FAILED, what="FAILED")
    assert "adopted pid" in rec.transitions[-1][2] and "is gone" in rec.transitions[-1][2]


@pytest.mark.parametrize("policy,code,final", [
    ("never", 3, S.FAILED), ("never", 0, S.EXITED), ("on-failure", 0, S.EXITED)])
async def test_exit_under_non_restarting_policy(tmp_path: Path, policy: str, code: int,
                                                final: S) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, f"raise SystemExit({code})", restart=policy,
                               ports={}), rec)
    sup.start()
    await asyncio.wait_for(sup.wait_stopped(), 30)
    assert sup.state == final
    assert rec.transitions[-1][2] == f"exited with status {code}"
    await sup.stop()  # no-op on a terminal state
    assert sup.state == final


async def test_on_failure_restarts_failing_process(tmp_path: Path) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, "raise SystemExit(2)", restart="on-failure", ports={}),
                     rec)
    sup.start()
    await until(lambda: sup.restarts >= 2, what="restarts")
    await sup.stop()
    assert sup.state == S.STOPPED


async def test_spawn_failure_backs_off_and_reports(tmp_path: Path) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, argv=["/nonexistent/app"], ports={}), rec)
    sup.start()
    await until(lambda: rec.count(S.BACKOFF) >= 2, what="backoff")
    assert rec.transitions[0][2].startswith("cannot start '/nonexistent/app' (cwd ")
    assert "no such file or directory" in rec.transitions[0][2]
    problem = sup.problem()
    assert problem is not None and problem.kind == "start_failed"
    # ... and the replica's own log says it, where `mso logs` looks.
    assert "mso: cannot start '/nonexistent/app'" in sup.spec.stderr_path.read_text()
    await sup.stop()
    assert sup.state == S.STOPPED


async def test_stop_during_backoff(tmp_path: Path) -> None:
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, "raise SystemExit(1)", ports={},
                               backoff=(30.0, 30.0, 60.0)), rec)
    sup.start()
    await until(lambda: sup.state == S.BACKOFF, what="BACKOFF")
    await asyncio.wait_for(sup.stop(), 10)
    assert rec.states()[-2:] == [S.STOPPING, S.STOPPED]


async def test_broken_probe_and_callback_do_not_kill_supervision(tmp_path: Path) -> None:
    rec = Recorder()
    calls: list[S] = []

    def exploding(rid: str, old: S, new: S, reason: str, ref: ProcessRef | None) -> None:
        calls.append(new)
        rec.on_transition(rid, old, new, reason, ref)
        raise RuntimeError("store is down")

    broken = ProbeSpec("exec", ["/nonexistent/check"], period=0.1, timeout=5.0,
                       failure_threshold=2)
    sup = ReplicaSupervisor(make_spec(tmp_path, liveness=broken), on_transition=exploding)
    sup.start()
    try:
        await until(lambda: sup.restarts >= 1 and sup.state in (S.RUNNING, S.READY),
                    what="restart after broken liveness probe")
        reason = [t[2] for t in rec.transitions if t[1] == S.BACKOFF][0]
        assert reason.startswith("liveness probe failed 2 times: no such file")
    finally:
        await sup.stop()
    assert calls[-1] == S.STOPPED


async def test_cancelling_supervision_is_clean(tmp_path: Path) -> None:
    sup = ReplicaSupervisor(make_spec(tmp_path, readiness=http_probe("/never")))
    sup.start()
    await until(lambda: sup.state == S.RUNNING, what="RUNNING")
    await sup.detach()
    assert sup.ref is not None and is_alive(sup.ref)
    await sup.stop()  # a detached supervisor can still stop its process
    await until(lambda: dead(sup.ref.pid) if sup.ref else True)


# -- problems: what the waiting commands report (mso.engines.problems) -------------------

async def test_a_crash_loop_is_named_after_three_exits_and_cleared_by_ready(
        tmp_path: Path) -> None:
    flag = tmp_path / "crash"
    flag.touch()
    code = ("import os, sys\n"
            f"if os.path.exists({str(flag)!r}): sys.exit(3)\n" + SERVER)
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, code, readiness=http_probe("/ready")), rec)
    (tmp_path / "ready").touch()
    sup.start()
    await until(lambda: sup.exits_in_a_row >= 2, what="two exits")
    assert sup.problem() is None  # two exits are not a loop yet
    await until(lambda: sup.problem() is not None, what="crash loop")
    problem = sup.problem()
    assert problem is not None and problem.kind == "crash_loop"
    assert problem.message.startswith("exited 3 times in a row without becoming ready; "
                                      "last: exited with status 3")
    flag.unlink()
    await until(lambda: sup.state == S.READY, what="ready once it stops crashing")
    assert sup.problem() is None and sup.exits_in_a_row == 0
    await sup.stop()


async def test_nothing_listening_on_port_is_named_after_the_allowance(tmp_path: Path) -> None:
    code = "import time\nprint('up, but on no port', flush=True)\ntime.sleep(60)\n"
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, code), rec, ready_allowance=0.5)
    sup.start()
    await until(lambda: sup.problem() is not None, what="not_listening")
    problem = sup.problem()
    port = sup.spec.ports["http"]
    assert problem is not None and problem.kind == "not_listening"
    assert problem.message.startswith(f"nothing listens on PORT={port}; does the service "
                                      "read $PORT?")
    assert sup.state == S.RUNNING and sup.last_reason == problem.message  # ps shows it
    await sup.stop()


async def test_a_failing_readiness_probe_is_a_problem_only_after_the_allowance(
        tmp_path: Path) -> None:
    now = [1000.0]
    rec = Recorder()
    sup = supervisor(make_spec(tmp_path, readiness=http_probe("/ready")), rec,
                     clock=lambda: now[0])
    sup.start()
    # The reason follows the probe's answer: "connection refused" until the server
    # listens, then what it answers.
    await until(lambda: "HTTP GET /ready returned 500" in sup.last_reason,
                what="probe failing with the server's answer")
    assert sup.problem() is None  # within the start-up allowance (the clock stands still)
    now[0] += 10.0
    problem = sup.problem()
    assert problem is not None and problem.kind == "not_ready"
    assert "HTTP GET /ready returned 500" in problem.message
    await sup.stop()
