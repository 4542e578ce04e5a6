"""Entry point of the daemon process: `python -m mso.daemon --state-dir DIR [...]`.

`mso up` runs this in the foreground or detached (`-d`). SIGTERM and SIGINT mean `down`
(stop everything); SIGHUP detaches, leaving replicas and the proxy running for a new
daemon to adopt.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import uvicorn

from mso.api.app import create_app
from mso.api.serving import QuietServer
from mso.daemon.core import Daemon, DaemonBusy
from mso.engines.local.process import raise_open_files_limit
from mso.daemon.logsettings import LogSettings, rotate_own_log
from mso.paths import StatePaths
from mso.spec.errors import ManifestError
from mso.importers import load_app
from mso.store.health import StoreUnavailable
from mso.store.secretbox import SecretsKeyError

log = logging.getLogger("mso.daemon")

#: The errors of a disk that refuses writes: full, over quota, read-only.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def _unix_listener(path: Path) -> socket.socket:
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket is born 0600: no window where others could connect
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _tcp_listener(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _bound_own_log(paths: StatePaths, period: float = 5.0) -> None:
    """Keep `.mso/daemon.log` (this process's stderr) under MSO_DAEMON_LOG_SIZE."""
    limit = LogSettings.from_env(os.environ).daemon_log_bytes
    while True:
        if rotate_own_log(paths.daemon_log, limit):
            log.info("daemon.log rotated to daemon.log.1 (over %d bytes)", limit)
        await asyncio.sleep(period)


ALIVE_PATH = "/v1/alive"
_ALIVE_HEAD = {"type": "http.response.start", "status": 200,
               "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")]}
_ALIVE_BODY = {"type": "http.response.body", "body": b"ok"}


def answer_alive(app: Any) -> Any:
    """The keeper's watchdog asks `GET /v1/alive` once a second: answered here, before
    the API's framework (its middleware and routing cost more than the answer, and the
    status it used to ask for read the store: a tenth of an idle daemon's Python time
    with 100 replicas). An answer still proves the event loop serves the API socket."""
    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == ALIVE_PATH:
            await send(_ALIVE_HEAD)
            await send(_ALIVE_BODY)
            return
        await app(scope, receive, send)
    return asgi


class KeeperWatch:
    """The daemon's half of mutual supervision (mso.daemon.keeper): when the keeper that
    runs this daemon dies while the daemon is not stopping, start a new keeper that adopts
    this process, and watch that one in turn."""

    def __init__(self, paths: StatePaths, api_port: int | None, daemon: Daemon,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.paths, self.api_port, self.daemon, self.loop = paths, api_port, daemon, loop
        self.fd: int | None = None
        self.child: subprocess.Popen[bytes] | None = None

    def watch(self, pid: int) -> bool:
        try:
            self.fd = os.pidfd_open(pid)
        except (ProcessLookupError, OSError):
            return False
        self.loop.add_reader(self.fd, self.died, pid)
        return True

    def died(self, pid: int) -> None:
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None
        if self.child is not None and self.child.pid == pid:
            self.child.wait()  # our own child (a keeper started below): reap it
        if self.daemon.shutting_down:
            return
        argv = [sys.executable, "-m", "mso.daemon.keeper", "--state-dir",
                str(self.paths.state_dir), "--adopt", str(os.getpid())]
        if self.api_port is not None:
            argv += ["--api-port", str(self.api_port)]
        with open(self.paths.daemon_log, "ab") as out:
            self.child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=out, start_new_session=True, close_fds=True)
        log.warning("the keeper (pid %d) died; started keeper pid %d to adopt this daemon",
                    pid, self.child.pid)
        self.daemon.store.add_event(
            "keeper.restarted", f"the keeper (pid {pid}) died; keeper pid {self.child.pid} "
            "now supervises the daemon", data={"old": pid, "new": self.child.pid})
        self.watch(self.child.pid)

    def close(self) -> None:
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None


async def run(paths: StatePaths, manifest: str | None, api_port: int | None) -> int:
    daemon = Daemon(paths)
    daemon.acquire_lock()
    paths.daemon_exit.unlink(missing_ok=True)  # written again only by a clean end
    await daemon.start()
    if manifest:
        try:
            daemon.apply(load_app(manifest, dict(os.environ)))
        except ManifestError as exc:
            daemon.store.add_event("daemon.error", str(exc))
            log.error("%s", exc)
        except StoreUnavailable as exc:
            # Started on a full disk with a changed manifest (or after `mso down`, which
            # cleared the desired state): serve what the store has; `mso up` reads
            # `apply_error` in the status and says so (or fails when nothing is wanted).
            daemon.apply_error = f"the manifest was not applied: {exc}"
            daemon.store.add_event("daemon.error", daemon.apply_error)
    servers: list[QuietServer] = []
    loop = asyncio.get_running_loop()

    dashboard: Any = None

    async def start_dashboard(port: int | None) -> int:
        # Imported here, on the first `mso dashboard`: the one import of mso.web by the
        # daemon layer that the import contract allows (the process's entry point wires
        # the app together; nothing else in mso.daemon or mso.api knows mso.web).
        nonlocal dashboard
        if dashboard is None:
            from mso.web.server import daemon_dashboard
            dashboard = daemon_dashboard(daemon, paths.api_token.read_text().strip())
        port_served: int = await dashboard.start(port)
        return port_served

    async def stop_servers() -> None:
        for server in servers:
            server.stop()
        if dashboard is not None:
            await dashboard.stop()

    tasks = []
    listeners = [(answer_alive(create_app(daemon, None, stop_servers, start_dashboard)),
                  _unix_listener(paths.api_socket))]
    if api_port is not None:
        token = paths.api_token.read_text().strip()
        listeners.append((create_app(daemon, token, stop_servers, start_dashboard),
                          _tcp_listener(api_port)))
    for app, sock in listeners:
        server = QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off",
                                            access_log=False))
        servers.append(server)
        tasks.append(asyncio.ensure_future(server.serve_on(sock)))

    async def on_signal(sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            await daemon.detach()
        else:
            await daemon.down()
        await stop_servers()

    def handler(sig: signal.Signals) -> None:
        asyncio.ensure_future(on_signal(sig))

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, handler, sig)
    own_log = asyncio.ensure_future(_bound_own_log(paths))
    keeper = KeeperWatch(paths, api_port, daemon, loop)
    keeper_pid = os.environ.get("MSO_KEEPER_PID", "")
    if keeper_pid.isdigit() and not keeper.watch(int(keeper_pid)):
        keeper.died(int(keeper_pid))  # gone before we looked: the same as dying now
    log.info("mso daemon %s ready on %s", os.getpid(), paths.api_socket)
    await daemon.run_forever()
    keeper.close()
    own_log.cancel()
    await stop_servers()
    await asyncio.gather(*tasks, return_exceptions=True)
    paths.api_socket.unlink(missing_ok=True)
    daemon.close()
    try:
        paths.daemon_exit.write_text(str(os.getpid()))  # ended as asked (see KeeperWatch)
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        # A full disk: the exit status (0) still tells the keeper that started this
        # daemon; only a keeper that adopted it (after its own crash) cannot know.
        log.warning("could not write %s (%s)", paths.daemon_exit, exc.strerror)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mso-daemon")
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--manifest")
    parser.add_argument("--api-port", type=int)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: analysis providers query once a second per
    # subset, which would drown the daemon's log (their outcomes are events instead).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    paths = StatePaths(Path(args.state_dir).resolve())
    raise_open_files_limit()  # a pidfd per replica: 1,000 of them pass the usual 1,024
    import uvloop
    try:
        return uvloop.run(run(paths, args.manifest, args.api_port))
    except (DaemonBusy, SecretsKeyError, StoreUnavailable) as exc:
        print(f"mso: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno not in DISK_ERRNOS:
            raise
        # A state folder that refuses what the daemon must write to start (its lock,
        # sockets, api token on a read-only or full disk): one line, no traceback.
        print(f"mso: the daemon cannot start: {exc.strerror} ({exc.filename or paths.state_dir}"
              f"): is the disk of {paths.state_dir} full or read-only?", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
