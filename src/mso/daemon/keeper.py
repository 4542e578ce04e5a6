"""The daemon's own supervisor: `python -m mso.daemon.keeper --state-dir DIR [...]`.

`mso up` starts this small process instead of the daemon itself. It runs the daemon as
its child and starts it again when it dies without being asked to stop (killed by a
signal, or a crash after it had started), so the control plane is supervised like the
proxy and the replicas are; a new daemon re-adopts the replicas and the proxy, which kept
serving meanwhile. Like systemd's `Restart=on-failure` with a start limit: five restarts
within 10 s are immediate, more back off from 0.5 s doubling to 30 s.

What does not restart: a daemon that exits 0 (`mso down`, or SIGHUP's detach for an
upgrade) ends the keeper too; a daemon that fails at its first start (a bad manifest, a
busy port) makes the keeper exit with its status, so `mso up` reports it. SIGTERM,
SIGINT and SIGHUP sent to the keeper are passed to the daemon, and the keeper exits with
it.

A watchdog, like systemd's WatchdogSec: once the daemon has answered on its API socket,
it is asked `GET /v1/alive` every second (2 s each); four unanswered in a row (a hung or SIGSTOPped
daemon) and it is killed and started again. Before its first answer it is asked five times
a second, so one that hangs right after starting is not mistaken for one still starting;
one that never answers within STARTUP_GRACE counts as hung too.

One keeper per app: it holds `.mso/keeper.lock`; a second one exits at once with status
75 (EX_TEMPFAIL) and `mso up` then waits for the daemon the first one runs.

The keeper is supervised in turn, by the daemon it keeps (mutual supervision, as a
process and its watchdog): the daemon watches its keeper's pidfd, and when the keeper
dies (SIGKILL, OOM) while the daemon is not stopping, it starts a new one with
`--adopt ITS_PID` (event `keeper.restarted`). An adopting keeper cannot wait() for a
daemon that is not its child, so it watches the daemon's pidfd and learns how it ended
from `.mso/daemon.exit`, which a daemon writes (its pid) when it ends as asked (down,
detach): present, the keeper exits 0 as it would for a status 0; absent, the daemon
died and is started again, now as the keeper's own child. Its watchdog is the same.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from mso.paths import StatePaths

ALREADY_KEPT = 75  # EX_TEMPFAIL: another keeper supervises this app
FREE_RESTARTS = 5
BURST_WINDOW = 10.0
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
STARTED_AFTER = 5.0  # a daemon that ran this long had started: its crash is restarted
WATCHDOG_PERIOD = 1.0
WATCHDOG_TIMEOUT = 2.0
WATCHDOG_MISSES = 4
#: Until the daemon first answers, the watchdog asks this often (a refused connect costs
#: nothing), so a daemon that answered once and hung right after (`mso up -d` returned, then
#: a SIGSTOP) is known to have started; and a daemon that never answers in STARTUP_GRACE
#: (its API opens after it has re-adopted its replicas: long at 1,000) counts as hung too.
STARTING_PERIOD = 0.2
STARTUP_GRACE = 120.0


def _say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} keeper: {message}", file=sys.stderr,
          flush=True)


def api_answers(path: Path, timeout: float = WATCHDOG_TIMEOUT) -> bool:
    """True when the daemon's API socket answers `GET /v1/alive` (any HTTP answer: a
    daemon older than that path answers 404, from a loop that serves all the same)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(b"GET /v1/alive HTTP/1.1\r\nHost: mso\r\nConnection: close\r\n\r\n")
            head = sock.recv(64)
            while sock.recv(65536):  # read it all: a reset mid-answer costs the daemon
                pass
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 ")


class Adopted:
    """A daemon this keeper did not start (`--adopt PID`): the parts of Popen the keeper
    uses, over a pidfd. Its exit status is 0 when it wrote `daemon.exit` (ended as asked),
    else -9 (died)."""

    def __init__(self, pid: int, exit_marker: Path) -> None:
        self.pid = pid
        self._marker = exit_marker
        self._fd = os.pidfd_open(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._fd], [], [], 0)
            if ready:
                self._ended()
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            select.select([self._fd], [], [])
            self._ended()
        return self.returncode

    @staticmethod
    def ended_as_asked(pid: int, marker: Path) -> bool:
        try:
            return marker.read_text().strip() == str(pid)
        except OSError:
            return False

    def _ended(self) -> None:
        clean = self.ended_as_asked(self.pid, self._marker)
        self.returncode = 0 if clean else -signal.SIGKILL
        os.close(self._fd)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            signal.pidfd_send_signal(self._fd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Keeper:
    def __init__(self, paths: StatePaths, first_args: list[str], again_args: list[str],
                 adopt: int | None = None) -> None:
        self.paths = paths
        self.first_args = first_args
        self.again_args = again_args
        self.child: subprocess.Popen[bytes] | Adopted | None = None
        self.stopping = False
        self.deaths: list[float] = []
        self.adopt = adopt

    def backoff(self) -> float:
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < BURST_WINDOW] + [now]
        over = len(self.deaths) - FREE_RESTARTS
        return 0.0 if over <= 0 else min(FIRST_BACKOFF * 2 ** (over - 1), MAX_BACKOFF)

    def forward(self, signum: int, _frame: object) -> None:
        self.stopping = True
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def watchdog(self, child: subprocess.Popen[bytes] | Adopted) -> None:
        answered, misses = False, 0
        started = time.monotonic()
        while child.poll() is None and not self.stopping:
            time.sleep(WATCHDOG_PERIOD if answered else STARTING_PERIOD)
            if child.poll() is not None or self.stopping:
                return
            if api_answers(self.paths.api_socket):
                answered, misses = True, 0
                continue
            if not answered and time.monotonic() - started < STARTUP_GRACE:
                continue  # still starting
            misses += 1
            if misses >= WATCHDOG_MISSES:
                _say(f"daemon pid {child.pid} did not answer {misses} status requests in a "
                     "row; killing it")
                child.kill()
                return

    def run(self) -> int:
        first = True
        while True:
            child: subprocess.Popen[bytes] | Adopted
            if self.adopt is not None:
                pid, self.adopt, first = self.adopt, None, False
                try:
                    self.child = child = Adopted(pid, self.paths.daemon_exit)
                except ProcessLookupError:
                    if Adopted.ended_as_asked(pid, self.paths.daemon_exit):
                        return 0
                    _say(f"daemon pid {pid} to adopt is gone; starting it again")
                    continue
                _say(f"adopted daemon pid {pid}")
            else:
                argv = [sys.executable, "-m", "mso.daemon", "--state-dir",
                        str(self.paths.state_dir),
                        *(self.first_args if first else self.again_args)]
                with open(self.paths.daemon_log, "ab") as log:
                    self.child = child = subprocess.Popen(
                        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                        env=dict(os.environ, MSO_KEEPER_PID=str(os.getpid())))
            started = time.monotonic()
            threading.Thread(target=self.watchdog, args=(child,), daemon=True).start()
            status = child.wait()
            ran = time.monotonic() - started
            if self.stopping or status == 0:
                return max(status, 0)
            if first and status > 0 and ran < STARTED_AFTER:
                return status  # failed to start: `mso up` reports the daemon's last words
            how = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
            delay = self.backoff()
            _say(f"daemon pid {child.pid} {how} after {ran:.1f}s; starting it again"
                 + (f" in {delay:.1f}s" if delay else ""))
            if delay:
                time.sleep(delay)
            if self.stopping:
                return 0
            first = False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mso-keeper")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--manifest")
    parser.add_argument("--api-port", type=int)
    parser.add_argument("--adopt", type=int, metavar="PID",
                        help="keep this running daemon (started by a keeper that died)")
    args = parser.parse_args(argv)
    paths = StatePaths(Path(args.state_dir))
    lock = os.open(paths.state_dir / "keeper.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return ALREADY_KEPT
    os.ftruncate(lock, 0)
    os.write(lock, str(os.getpid()).encode())
    again = ["--api-port", str(args.api_port)] if args.api_port is not None else []
    first = (["--manifest", args.manifest] if args.manifest else []) + again
    keeper = Keeper(paths, first, again, adopt=args.adopt)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, keeper.forward)
    return keeper.run()


if __name__ == "__main__":
    sys.exit(main())
