"""Real-process tests of spawn/identify/wait/signal/sweep."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

from mso.engines.local.process import (
    ProcessRef, SpawnError, find_env_processes, is_alive, is_same_process,
    kill_instance_processes, parse_stat, read_start_time, signal_group, spawn, wait_exit,
)

from .conftest import until, until_sync

pytestmark = pytest.mark.anyio


def _spawn_py(tmp_path: Path, code: str, env: dict[str, str] | None = None) -> ProcessRef:
    script = tmp_path / f"s{uuid.uuid4().hex[:6]}.py"
    script.write_text(code)
    return spawn([sys.executable, str(script)], env={"PATH": os.environ["PATH"], **(env or {})},
                 cwd=str(tmp_path), stdout_path=tmp_path / "out.log",
                 stderr_path=tmp_path / "err.log")


def test_parse_stat_handles_spaces_and_parens_in_comm() -> None:
    fields = " ".join(str(i) for i in range(3, 30))
    text = f"123 (evil ) name) (x) S {fields[2:]}"
    state, start = parse_stat(text)
    assert state == "S"
    assert start == 22


async def test_spawn_delivers_env_cwd_and_own_session(tmp_path: Path) -> None:
    ref = _spawn_py(tmp_path, "import os, sys\n"
                    "print(os.environ['GREETING'], os.getcwd(), os.getsid(0) == os.getpid(),\n"
                    "      os.getpgid(0) == os.getpid(), sys.stdin.read() == '', flush=True)\n"
                    "print('to-stderr', file=sys.stderr)\n", {"GREETING": "hello"})
    assert ref.start_time == read_start_time(ref.pid)
    assert await asyncio.wait_for(wait_exit(ref), 30) == 0
    assert (tmp_path / "out.log").read_text() == f"hello {tmp_path} True True True\n"
    assert (tmp_path / "err.log").read_text() == "to-stderr\n"


async def test_output_files_are_appended_not_truncated(tmp_path: Path) -> None:
    (tmp_path / "out.log").write_text("old\n")
    ref = _spawn_py(tmp_path, "print('new')")
    await asyncio.wait_for(wait_exit(ref), 30)
    assert (tmp_path / "out.log").read_text() == "old\nnew\n"


async def test_stdout_is_opened_with_o_append(tmp_path: Path) -> None:
    ref = _spawn_py(tmp_path, "import fcntl, os\nprint(bool(fcntl.fcntl(1, fcntl.F_GETFL) & os.O_APPEND))")
    await asyncio.wait_for(wait_exit(ref), 30)
    assert (tmp_path / "out.log").read_text() == "True\n"


async def test_wait_exit_reports_status_and_signals(tmp_path: Path) -> None:
    assert await asyncio.wait_for(wait_exit(_spawn_py(tmp_path, "raise SystemExit(7)")), 30) == 7
    ref = _spawn_py(tmp_path, "import time; time.sleep(1000)")
    assert signal_group(ref, signal.SIGKILL)
    assert await asyncio.wait_for(wait_exit(ref), 30) == -signal.SIGKILL
    # reaped: no zombie left behind, and the ref no longer names a process
    assert not Path(f"/proc/{ref.pid}").exists() or not is_same_process(ref)


async def test_wait_exit_of_already_exited_child_returns_status(tmp_path: Path) -> None:
    ref = _spawn_py(tmp_path, "raise SystemExit(3)")
    until_sync(lambda: not is_alive(ref), what="child exit")
    assert await asyncio.wait_for(wait_exit(ref), 30) == 3


async def test_wait_exit_of_foreign_process_returns_none(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec("sleep", "1000")
    start = read_start_time(proc.pid)
    assert start is not None
    ref = ProcessRef(proc.pid, start)
    waiter = asyncio.ensure_future(wait_exit(ref))
    await asyncio.sleep(0)
    assert not waiter.done()
    proc.kill()
    assert await asyncio.wait_for(waiter, 30) is None
    await proc.wait()


def test_start_time_mismatch_is_not_same_process(tmp_path: Path) -> None:
    me = read_start_time(os.getpid())
    assert me is not None
    assert is_same_process(ProcessRef(os.getpid(), me))
    impostor = ProcessRef(os.getpid(), me + 1)  # pid reused by another process
    assert not is_same_process(impostor)
    assert not signal_group(impostor, signal.SIGKILL)  # and we are still alive


def test_spawn_error_is_translated(tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="cannot start"):
        spawn(["/nonexistent/binary"], env={}, cwd=str(tmp_path),
              stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")


def test_shell_mode_runs_through_sh(tmp_path: Path) -> None:
    ref = spawn("echo $((6*7)) > answer", env={}, cwd=str(tmp_path), shell=True,
                stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")
    until_sync(lambda: (tmp_path / "answer").exists() and (tmp_path / "answer").read_text() == "42\n")
    until_sync(lambda: not is_alive(ref))


async def test_instance_sweep_kills_escaped_grandchild(tmp_path: Path) -> None:
    instance = uuid.uuid4().hex
    marker = tmp_path / "gc.pid"
    ref = _spawn_py(tmp_path, (
        "import subprocess, sys\n"
        f"p = subprocess.Popen(['sleep', '1000'], start_new_session=True)\n"
        f"open({str(marker)!r}, 'w').write(str(p.pid))\n"
        "import time; time.sleep(1000)\n"), {"MSO_INSTANCE": instance})
    await until(lambda: marker.exists() and marker.read_text() != "", what="grandchild pid")
    gc = int(marker.read_text())
    assert os.getsid(gc) != ref.pid
    assert sorted(find_env_processes({"MSO_INSTANCE": instance})) == sorted([ref.pid, gc])
    assert kill_instance_processes(instance) == 2
    await asyncio.wait_for(wait_exit(ref), 30)
    await until(lambda: not Path(f"/proc/{gc}").exists() or
                parse_stat(Path(f"/proc/{gc}/stat").read_text())[0] == "Z", what="gc death")


async def test_env_sweeps_are_batched_and_flushed_before_a_respawn(tmp_path: Path) -> None:
    """Per-replica sweeps for escaped processes (1,000 at once in `mso down`) are done in
    one pass over /proc; a pending sweep is flushed before its replica starts again, so it
    can never hit the new process."""
    from mso.engines.local.process import EnvSweeper

    instance = uuid.uuid4().hex
    escaped = []
    for rid in ("web-1", "web-2", "web-3"):
        escaped.append(_spawn_py(tmp_path, "import time; time.sleep(1000)\n",
                                 {"MSO_INSTANCE": instance, "MSO_REPLICA": rid}))
    sweeper = EnvSweeper(delay=0.05)
    for rid in ("web-1", "web-2"):
        sweeper.request({"MSO_INSTANCE": instance, "MSO_REPLICA": rid})
    assert is_alive(escaped[0])  # deferred: nothing killed yet
    await asyncio.wait_for(asyncio.gather(wait_exit(escaped[0]), wait_exit(escaped[1])), 30)
    assert sweeper.passes == 1 and is_alive(escaped[2])  # one pass, and only its matches
    sweeper.request({"MSO_INSTANCE": instance, "MSO_REPLICA": "web-3"})
    assert sweeper.flush() == 1  # the supervisor flushes before spawning web-3 again
    await asyncio.wait_for(wait_exit(escaped[2]), 30)
    fresh = _spawn_py(tmp_path, "import time; time.sleep(1000)\n",
                      {"MSO_INSTANCE": instance, "MSO_REPLICA": "web-3"})
    # Nothing is left pending (no timer either) that could reach the new process.
    assert not sweeper.pending and sweeper._handle is None
    assert is_alive(fresh) and sweeper.passes == 2
    kill_instance_processes(instance)
    await asyncio.wait_for(wait_exit(fresh), 30)


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    """A pidfd per replica: the daemon of 1,000 replicas needs more than 1,024 fds."""
    import subprocess as sp

    code = ("import resource\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 4096))\n"
            "from mso.engines.local.process import raise_open_files_limit\n"
            "print(*raise_open_files_limit(), *resource.getrlimit(resource.RLIMIT_NOFILE))\n")
    out = sp.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                 env=dict(os.environ))
    assert out.stdout.split() == ["256", "4096", "4096", "4096"]


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
async def test_spawn_drops_to_run_as_before_exec(tmp_path: Path) -> None:
    """mso's child itself becomes the user (no wrapper): uid, gid and groups, and none of
    root's capabilities; a program the user cannot run is a SpawnError, not a crash."""
    from mso.engines.local.process import SpawnError, spawn, wait_exit
    from mso.engines.local.users import RunAs
    out = tmp_path / "out"
    ref = spawn(["/bin/sh", "-c", "id -u; id -g; id -G; grep CapEff /proc/self/status"],
                env={"PATH": "/usr/bin:/bin"}, cwd=str(tmp_path), stdout_path=out,
                stderr_path=out, run_as=RunAs(65534, 65533, (65533, 4242), "nobody", "/"))
    assert await wait_exit(ref) == 0
    lines = out.read_text().split("\n")
    assert lines[:3] == ["65534", "65533", "65533 4242"], lines
    assert lines[3].split() == ["CapEff:", "0000000000000000"], lines
    # A program the user may not reach (a 0700 folder of root's) does not start, and
    # says why: the check is the kernel's, made as the user.
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "prog").write_text("#!/bin/sh\necho ran\n")
    (private / "prog").chmod(0o755)
    with pytest.raises(SpawnError) as err:
        spawn([str(private / "prog")], env={}, cwd=str(tmp_path), stdout_path=out,
              stderr_path=out, run_as=RunAs(65534, 65534, (65534,), "nobody", "/"))
    assert "permission denied" in str(err.value).lower()
