"""OS process primitives for replicas: spawn detached, identify, wait, signal, sweep.

Replicas must survive a ``kill -9`` of the daemon, so every replica gets its own session
and process group, ``/dev/null`` as stdin and O_APPEND files as stdout/stderr (never pipes
into the daemon). A process is identified by ``ProcessRef(pid, start_time)`` where
``start_time`` is field 22 of ``/proc/PID/stat``: a pid alone may be reused by the kernel,
the pair may not.

Exceptions: :class:`SpawnError` (the process could not be started; carries ``errno``-style
detail). Everything else returns ``False``/``None`` instead of raising when a process has
gone away, because that is an ordinary outcome here.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

from mso.engines.local.logs import reserve_space

if TYPE_CHECKING:
    from mso.engines.local.cgroups import Cgroup
    from mso.engines.local.users import RunAs

PROC = Path("/proc")
INSTANCE_ENV = "MSO_INSTANCE"
REPLICA_ENV = "MSO_REPLICA"

# Our own children, so that wait_exit() can reap them and return their status.
_children: dict[int, subprocess.Popen[bytes]] = {}
log = logging.getLogger(__name__)


class SpawnError(OSError):
    """The replica process could not be started (bad executable, cwd, permissions...)."""


@dataclass(frozen=True)
class ProcessRef:
    """Identity of a process: the pid plus its kernel start time (clock ticks since boot)."""

    pid: int
    start_time: int


def parse_stat(text: str) -> tuple[str, int]:
    """Return ``(state, start_time)`` from the text of ``/proc/PID/stat``.

    The comm field (2) is in parentheses and may itself contain spaces and ')', so split
    at the *last* ')'; the fields after it start at field 3.
    """
    rest = text[text.rindex(")") + 1 :].split()
    return rest[0], int(rest[22 - 3])


def _read_stat(pid: int) -> tuple[str, int] | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def read_start_time(pid: int) -> int | None:
    """Start time of ``pid`` (field 22 of /proc/PID/stat), or None if it does not exist."""
    stat = _read_stat(pid)
    return None if stat is None else stat[1]


def is_same_process(ref: ProcessRef) -> bool:
    """Whether ``ref.pid`` still names the very process ``ref`` was taken from."""
    return read_start_time(ref.pid) == ref.start_time


def is_alive(ref: ProcessRef) -> bool:
    """Same process and not a zombie."""
    stat = _read_stat(ref.pid)
    return stat is not None and stat[1] == ref.start_time and stat[0] not in ("Z", "X")


def _join_cgroup(cgroup: Cgroup | None) -> Callable[[], None] | None:
    if cgroup is None or not cgroup.enforced.get("pids_tracking", False):
        return None
    procs_files = cgroup.procs_files()

    def join() -> None:
        # Runs in the child between fork and exec: joining here means the process and
        # everything it forks is accounted to the cgroup from its first instruction.
        pid = str(os.getpid()).encode()
        for path in procs_files:
            try:
                fd = os.open(path, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)
            except OSError:
                pass  # best effort: a missing limit must not prevent the replica

    return join


def _preexec(cgroup: Cgroup | None, run_as: RunAs | None) -> Callable[[], None] | None:
    """What the child does between fork and exec: join its cgroup (as root), then drop
    to `run_as` (groups first, then the gid, then the uid: after setuid nothing else may
    change). Popen's own `user=` would drop before the preexec, too early to join."""
    join = _join_cgroup(cgroup)
    if run_as is None:
        return join

    def child() -> None:
        if join is not None:
            join()
        os.setgroups(list(run_as.groups))
        os.setgid(run_as.gid)
        os.setuid(run_as.uid)

    return child


def spawn(
    argv: list[str] | str,
    *,
    env: dict[str, str],
    cwd: str,
    stdout_path: Path,
    stderr_path: Path,
    cgroup: Cgroup | None = None,
    shell: bool = False,
    run_as: RunAs | None = None,
) -> ProcessRef:
    """Start a detached replica process and return its identity.

    With ``shell=True`` the command (a string, or a list joined by spaces) runs as
    ``/bin/sh -c STRING``; otherwise ``argv`` is executed directly. With ``run_as`` the
    child takes that user's identity before exec (mso.engines.local.users).
    """
    if shell:
        command = argv if isinstance(argv, str) else " ".join(argv)
        args: list[str] = ["/bin/sh", "-c", command]
    else:
        if isinstance(argv, str) or not argv:
            raise SpawnError(f"argv must be a non-empty list, got {argv!r}")
        args = list(argv)
    reap_children()
    try:
        with _output(stdout_path) as out, _output(stderr_path) as err:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=cwd,
                env=env,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_preexec(cgroup, run_as),
            )
    except OSError as exc:
        raise SpawnError(exc.errno, f"cannot start {args[0]!r}: {exc.strerror or exc}") from exc
    except subprocess.SubprocessError as exc:  # the preexec failed (setuid refused)
        raise SpawnError(errno.EPERM, f"cannot start {args[0]!r} as uid "
                         f"{run_as.uid if run_as else '?'}: {exc}") from exc
    _children[proc.pid] = proc
    start = read_start_time(proc.pid)
    # The child cannot have been reaped yet (only we reap it), so /proc/PID exists.
    return ProcessRef(proc.pid, start if start is not None else 0)


#: Errors of a disk that refuses writes: the replica starts anyway, without its output.
_DISK_ERRNOS = frozenset({errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO})


#: Space a replica's new output file must get before the replica writes into it.
OUTPUT_RESERVE = 64 * 1024


def _output(path: Path) -> BinaryIO:
    """The replica's output file, opened O_APPEND; /dev/null when the disk refuses it
    (read-only after an error, no inode left): a crashed replica is restarted even
    then, its output is lost until the disk is repaired (and the daemon's log says so)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        out = open(path, "ab")
    except OSError as exc:
        if exc.errno not in _DISK_ERRNOS:
            raise
        log.warning("cannot open %s (%s): this replica's output goes to /dev/null",
                    path, exc.strerror)
        return open(os.devnull, "ab")
    # A full disk still makes the file (an inode) but takes no byte: the replica's first
    # print would fail with ENOSPC and crash many programs (a daemon starting on a full
    # disk starts every replica). The collector's reserve (mso.engines.local.logs) is
    # taken here first; a file that cannot have it is not used.
    if not reserve_space(out.fileno(), OUTPUT_RESERVE) and \
            ctypes.get_errno() in (errno.ENOSPC, errno.EDQUOT):
        out.close()
        log.warning("no space for %s (the disk is full): this replica's output goes to "
                    "/dev/null until it restarts", path)
        return open(os.devnull, "ab")
    return out


_last_reap = 0.0
#: Every spawn reaped every child (one waitpid each): quadratic when starting 1,000
#: replicas. Zombies of abandoned waiters wait this long at most.
REAP_INTERVAL = 1.0


def raise_open_files_limit(target: int = 1_048_576) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most `target`); returns
    (before, after).

    The daemon holds a pidfd per replica for its whole life, plus a socket per probe in
    flight and the files it tails: 1,000 replicas need more than the usual soft limit of
    1,024 (systemd's default), and running out shows as spawns and probes failing with
    EMFILE. Replicas inherit the raised limit, as they would under Docker.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit above %d", soft)
            return soft, soft
        return soft, want
    return soft, soft


def reap_children(force: bool = False) -> None:
    """Reap children whose waiters went away, so the daemon never accumulates zombies
    (at most once per REAP_INTERVAL unless forced)."""
    global _last_reap
    now = time.monotonic()
    if not force and now - _last_reap < REAP_INTERVAL:
        return
    _last_reap = now
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            _children.pop(pid, None)


def is_child(ref: ProcessRef) -> bool:
    """Whether the process was spawned by this daemon process."""
    return ref.pid in _children


def _child_status(ref: ProcessRef) -> int | None:
    proc = _children.pop(ref.pid, None)
    if proc is None:
        return None
    try:
        return proc.wait(timeout=5.0)
    except subprocess.TimeoutExpired:
        _children[ref.pid] = proc
        return None


async def wait_exit(ref: ProcessRef) -> int | None:
    """Wait until the process exits; return its status for our children, else None.

    Uses a pidfd, so it also works for adopted processes that are not our children.
    The status follows subprocess' convention: negative for a signal.
    """
    try:
        fd = os.pidfd_open(ref.pid)
    except ProcessLookupError:
        return _child_status(ref)
    try:
        if not is_same_process(ref):
            return _child_status(ref) if ref.pid in _children else None
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await done
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)
    return _child_status(ref)


def signal_group(ref: ProcessRef, sig: int) -> bool:
    """Signal the process group led by ``ref`` if ``ref`` is still the same process."""
    if ref.pid in (0, 1, os.getpid()) or not is_same_process(ref):
        return False
    try:
        if os.getpgid(ref.pid) == ref.pid:
            os.killpg(ref.pid, sig)
        else:  # not a group leader (adopted from elsewhere): signal the process only
            os.kill(ref.pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _environ_matches(pid: int, needles: list[bytes]) -> bool:
    entries = _environ(pid)
    return entries is not None and all(needle in entries for needle in needles)


def _environ(pid: int) -> set[bytes] | None:
    """The initial environment of `pid` as a set of ``KEY=value`` entries (None if gone).

    os-level calls rather than pathlib: a sweep reads every process's environ, and with
    1,000 replicas that is 1,000 reads per sweep.
    """
    try:
        fd = os.open(f"/proc/{pid}/environ", os.O_RDONLY)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return set(b"".join(chunks).split(b"\0"))


def _pids() -> list[int]:
    me = os.getpid()
    return [int(name) for name in os.listdir(PROC) if name.isdigit() and int(name) != me]


def find_env_processes(match: dict[str, str]) -> list[int]:
    """Pids whose initial environment contains every ``KEY=value`` of ``match``."""
    return find_env_processes_any([match])


def find_env_processes_any(matches: list[dict[str, str]]) -> list[int]:
    """Pids whose initial environment contains every ``KEY=value`` of one of ``matches``
    (one pass over /proc, however many matches)."""
    wanted = [{f"{k}={v}".encode() for k, v in m.items()} for m in matches]
    if not wanted:
        return []
    # Only environments holding a needle of some match can match: skip the others fast.
    first = {next(iter(w)) for w in wanted if w}
    pids: list[int] = []
    for pid in _pids():
        entries = _environ(pid)
        if entries is None or not (first & entries if first else True):
            continue
        if any(w <= entries for w in wanted):
            pids.append(pid)
    return pids


def kill_env_processes(match: dict[str, str], sig: int = signal.SIGKILL) -> int:
    """Signal every process whose environment matches; return how many were signalled."""
    return _signal_all(find_env_processes(match), sig)


def _signal_all(pids: list[int], sig: int) -> int:
    count = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            count += 1
        except (ProcessLookupError, PermissionError):
            pass
    return count


class EnvSweeper:
    """Coalesces the per-replica sweeps for processes that escaped their group.

    After every exit a replica's leftovers are looked for by their environment, which
    means reading every process's environ: with 1,000 replicas exiting at once (`mso
    down`, a crash of many) one sweep each is 1,000,000 reads, minutes of daemon CPU. The
    sweeps requested within ``delay`` are done in one pass. Before a replica is spawned
    again, its pending sweep runs first (:meth:`flush`), so a sweep can never hit the new
    process that carries the same replica id.
    """

    def __init__(self, delay: float = 0.1) -> None:
        self.delay = delay
        self.pending: list[dict[str, str]] = []
        self._handle: asyncio.TimerHandle | None = None
        self.passes = 0

    def request(self, match: dict[str, str]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a CLI or a test): at once
            kill_env_processes(match)
            return
        self.pending.append(match)
        if self._handle is None:
            self._handle = loop.call_later(self.delay, self.flush)

    def flush(self) -> int:
        """Run the pending sweeps now (one /proc pass); returns how many were signalled."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        matches, self.pending = self.pending, []
        if not matches:
            return 0
        self.passes += 1
        try:
            return _signal_all(find_env_processes_any(matches), signal.SIGKILL)
        except OSError as exc:  # never let a sweep kill the caller (a timer callback)
            log.warning("sweep for leftover processes failed: %s", exc)
            return 0


#: The daemon's one sweeper (replica supervisors share it).
ENV_SWEEPER = EnvSweeper()


def kill_instance_processes(instance_id: str, sig: int = signal.SIGKILL) -> int:
    """Signal every process carrying ``MSO_INSTANCE=<instance_id>`` (never ourselves)."""
    return kill_env_processes({INSTANCE_ENV: instance_id}, sig)
