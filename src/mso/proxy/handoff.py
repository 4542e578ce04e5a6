"""Listening sockets that outlive the proxy process: the daemon keeps copies of them.

Like systemd's file-descriptor store, the daemon holds a duplicate of every listening
socket the proxy has bound.  While a duplicate is open the kernel keeps the socket in
LISTEN state, so when the proxy dies (even by SIGKILL) new connections wait in the
accept backlog instead of being refused; a spare proxy that the daemon then hands the
sockets to, with the current route table, accepts them.  HAProxy's seamless reload
passes its sockets the same way (SCM_RIGHTS over a unix socket).

The exchange has its own unix socket beside the control socket (`CONTROL.fds`) because
the control protocol's asyncio streams cannot carry file descriptors.  One request per
connection, JSON plus descriptors:

    {"op": "export"}                    -> {"ok": true, "keys": [[BIND, PORT], ...]} + fds
    {"op": "import", "keys": [...]} + fds -> {"ok": true, "adopted": N}

A key is the listener's (bind, port) as the route table asked for it (port 0 included),
so a table that asks for the same address again gets the same socket; a listening TCP
socket does not care which mode (http, tcp, metrics) serves it.

The proxy serves the exchange on a thread of its own (it is rare and off the hot path)
and hands every operation to the event loop, which owns the listeners.  The daemon's
side (`export_sockets`, `import_sockets`) is blocking and meant for a worker thread.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import threading
from typing import Any, Callable, Protocol

from mso.errors import Unavailable

Key = tuple[str, int]
MAX_FDS = 250  # SCM_RIGHTS carries at most 253 descriptors per message on Linux
_BUFSIZE = 1 << 20


class HandoffError(Unavailable):
    """The exchange failed (no proxy there, or a malformed answer): retry later."""


class SocketOwner(Protocol):
    """What the proxy's runtime offers the exchange (called on the event loop)."""

    def listening_sockets(self) -> list[tuple[Key, int]]: ...

    def adopt_sockets(self, socks: list[tuple[Key, socket.socket]]) -> int: ...


def path_for(control: str) -> str:
    return control + ".fds"


def _recv_all(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    msg, fds, _flags, _addr = socket.recv_fds(conn, _BUFSIZE, MAX_FDS)
    if not msg:
        for fd in fds:
            os.close(fd)
        raise HandoffError("connection closed before a message")
    try:
        data = json.loads(msg)
    except ValueError as exc:
        for fd in fds:
            os.close(fd)
        raise HandoffError(f"malformed message: {exc}") from exc
    if not isinstance(data, dict):
        for fd in fds:
            os.close(fd)
        raise HandoffError("message must be a JSON object")
    return data, fds


def _parse_keys(raw: Any, count: int) -> list[Key]:
    if not isinstance(raw, list) or len(raw) != count:
        raise HandoffError(f"'keys' must list one [bind, port] per descriptor ({count})")
    keys: list[Key] = []
    for item in raw:
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], int) or isinstance(item[1], bool)):
            raise HandoffError(f"bad key {item!r}: expected [bind, port]")
        keys.append((item[0], item[1]))
    return keys


# --- the proxy's side ------------------------------------------------------------------
class HandoffServer:
    """Serves the exchange for `owner` on a daemon thread until `close()`."""

    def __init__(self, owner: SocketOwner, path: str, loop: asyncio.AbstractEventLoop) -> None:
        self.owner = owner
        self.path = path
        self.loop = loop
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old_umask)
        self.sock.listen(8)
        self._thread = threading.Thread(target=self._serve, name="mso-handoff", daemon=True)
        self._thread.start()

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=10.0)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(10.0)
                try:
                    self._one(conn)
                except Exception as exc:  # a bad peer must not end the exchange
                    try:
                        conn.sendall(json.dumps({"ok": False, "error": str(exc)}).encode())
                    except OSError:
                        pass

    def _one(self, conn: socket.socket) -> None:
        msg, fds = _recv_all(conn)
        op = msg.get("op")
        if op == "export":
            for fd in fds:
                os.close(fd)
            pairs: list[tuple[Key, int]] = self._on_loop(self.owner.listening_sockets)
            try:
                body = json.dumps({"ok": True, "keys": [list(k) for k, _ in pairs]}).encode()
                socket.send_fds(conn, [body], [fd for _, fd in pairs])
            finally:
                for _, fd in pairs:
                    os.close(fd)
        elif op == "import":
            try:
                keys = _parse_keys(msg.get("keys"), len(fds))
            except HandoffError:
                for fd in fds:
                    os.close(fd)
                raise
            socks = [(k, socket.socket(fileno=fd)) for k, fd in zip(keys, fds)]
            adopted = self._on_loop(lambda: self.owner.adopt_sockets(socks))
            conn.sendall(json.dumps({"ok": True, "adopted": adopted}).encode())
        else:
            for fd in fds:
                os.close(fd)
            raise HandoffError(f"unknown op {op!r}; expected export or import")

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


# --- the daemon's side (blocking) ------------------------------------------------------
def _connect(path: str, timeout: float) -> socket.socket:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(path)
    except OSError as exc:
        conn.close()
        raise HandoffError(f"socket hand-over {path}: {exc}") from exc
    return conn


def export_sockets(control: str, timeout: float = 5.0) -> dict[Key, socket.socket]:
    """Duplicates of the proxy's listening sockets, by (bind, port)."""
    try:
        with _connect(path_for(control), timeout) as conn:
            conn.sendall(b'{"op": "export"}')
            msg, fds = _recv_all(conn)
    except HandoffError:
        raise
    except OSError as exc:
        raise HandoffError(f"socket hand-over {control}: {exc}") from exc
    socks = [socket.socket(fileno=fd) for fd in fds]
    try:
        if not msg.get("ok"):
            raise HandoffError(str(msg.get("error", "export refused")))
        keys = _parse_keys(msg.get("keys"), len(socks))
    except HandoffError:
        for s in socks:
            s.close()
        raise
    return dict(zip(keys, socks))


def import_sockets(control: str, socks: dict[Key, socket.socket], timeout: float = 5.0) -> int:
    """Give the proxy at `control` the listening sockets (it dups them; ours stay open)."""
    items = list(socks.items())[:MAX_FDS]
    body = json.dumps({"op": "import", "keys": [list(k) for k, _ in items]}).encode()
    try:
        with _connect(path_for(control), timeout) as conn:
            socket.send_fds(conn, [body], [s.fileno() for _, s in items])
            conn.shutdown(socket.SHUT_WR)
            data = conn.recv(_BUFSIZE)
    except HandoffError:
        raise
    except OSError as exc:
        raise HandoffError(f"socket hand-over {control}: {exc}") from exc
    try:
        msg = json.loads(data)
    except ValueError as exc:
        raise HandoffError(f"malformed answer to import: {exc}") from exc
    if not isinstance(msg, dict) or not msg.get("ok"):
        raise HandoffError(str(msg.get("error", "import refused") if isinstance(msg, dict)
                               else "import refused"))
    return int(msg.get("adopted", 0))
