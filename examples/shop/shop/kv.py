"""Client for the shop's kvstore (see shop/kvstore.py for the protocol).

    kv = KV.from_env()          # KVSTORE_HOST / KVSTORE_PORT, set by mso
    kv.set("greeting", "hello")
    kv.incr("hits", 1)          # -> 1

Thread-safe: a small pool of connections is shared by the server's request
threads. Every socket error or timeout becomes `KVError`, so services can
answer 503 instead of crashing or hanging.
"""

from __future__ import annotations

import os
import socket
import threading


class KVError(Exception):
    """The kvstore is unreachable, timed out or refused the command."""


class _Conn:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rwb")
        self.used = False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class KV:
    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._idle: list[_Conn] = []
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> KV:
        host = os.environ.get("KVSTORE_HOST", "127.0.0.1")
        return cls(host, int(os.environ.get("KVSTORE_PORT", "6390")))

    def ping(self) -> bool:
        try:
            return self._command("PING") == "+PONG"
        except KVError:
            return False

    def get(self, key: str) -> str | None:
        reply = self._command(f"GET {_key(key)}")
        return None if reply == "_" else reply[1:]

    def set(self, key: str, value: str) -> None:
        if "\n" in value or "\r" in value:
            raise ValueError("kvstore values are single lines")
        self._command(f"SET {_key(key)} {value}")

    def incr(self, key: str, n: int = 1) -> int:
        return int(self._command(f"INCR {_key(key)} {int(n)}")[1:])

    def keys(self, prefix: str = "") -> list[str]:
        return self._command(f"KEYS {prefix}".rstrip(), multi=True).split("\n")[1:]

    def _command(self, line: str, multi: bool = False) -> str:
        conn = self._borrow()
        try:
            reply = self._roundtrip(conn, line, multi)
        except OSError as exc:
            conn.close()
            # A pooled connection may have been closed while idle (kvstore or
            # proxy restarted). The command never ran then, so one retry on a
            # fresh connection is safe, even for INCR.
            if not (conn.used and isinstance(exc, ConnectionError)):
                raise KVError(f"{self.host}:{self.port}: {exc}") from exc
            try:
                conn = self._borrow(fresh=True)
                reply = self._roundtrip(conn, line, multi)
            except OSError as exc2:
                conn.close()
                raise KVError(f"{self.host}:{self.port}: {exc2}") from exc2
        conn.used = True
        with self._lock:
            self._idle.append(conn)
        if reply.startswith("-"):
            raise KVError(reply[1:].strip())
        return reply

    def _borrow(self, fresh: bool = False) -> _Conn:
        with self._lock:
            if self._idle and not fresh:
                return self._idle.pop()
        try:
            return _Conn(self.host, self.port, self.timeout)
        except OSError as exc:
            raise KVError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc

    @staticmethod
    def _roundtrip(conn: _Conn, line: str, multi: bool) -> str:
        conn.file.write(line.encode() + b"\n")
        conn.file.flush()
        first = _readline(conn)
        if not (multi and first.startswith("*")):
            return first
        return "\n".join([first] + [_readline(conn) for _ in range(int(first[1:]))])


def _readline(conn: _Conn) -> str:
    raw = conn.file.readline()
    if not raw.endswith(b"\n"):
        raise ConnectionResetError("kvstore closed the connection")
    return raw[:-1].decode()


def _key(key: str) -> str:
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"invalid kvstore key {key!r}")
    return key
