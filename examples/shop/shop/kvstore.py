"""kvstore: the shop's tiny TCP key-value store (one replica).

Line protocol, one command per line, one reply per command:

    PING          -> +PONG
    GET k         -> $value      or _ when k is missing
    SET k v       -> +OK         (v is the rest of the line, spaces allowed)
    INCR k n      -> :new-value  (a missing key counts as 0; n may be negative)
    KEYS prefix   -> *N, then N lines with the matching keys, sorted
    anything else -> -ERR reason

With a data folder ($MSO_DATA_DIR, else $DATA_DIR), every write is appended
to <folder>/kvstore.aof and replayed at start, so a restart keeps the shop's
stock and orders; without one the data lives in memory only.
"""

from __future__ import annotations

import os
import signal
import socketserver
import threading
from pathlib import Path
from typing import IO

from shop.common import log


class Store:
    """The data and its append-only file; every method is atomic."""

    def __init__(self, data_dir: str | None) -> None:
        self.data: dict[str, str] = {}
        self.lock = threading.Lock()
        self.aof: IO[str] | None = None
        if data_dir:
            self._open(Path(data_dir) / "kvstore.aof")

    def _open(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            for line in path.read_text().splitlines():
                _, key, value = (line.split(" ", 2) + [""])[:3]
                self.data[key] = value
        # Compact at start: one SET per key, written aside then swapped in, so a
        # crash mid-rewrite leaves the old file intact.
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"SET {k} {v}\n" for k, v in self.data.items()))
        os.replace(tmp, path)
        self.aof = path.open("a")

    def set(self, key: str, value: str) -> None:
        with self.lock:
            self.data[key] = value
            self._persist(key, value)

    def incr(self, key: str, n: int) -> int:
        with self.lock:
            value = int(self.data.get(key, "0")) + n
            self.data[key] = str(value)
            self._persist(key, str(value))
            return value

    def keys(self, prefix: str) -> list[str]:
        with self.lock:
            return sorted(k for k in self.data if k.startswith(prefix))

    def _persist(self, key: str, value: str) -> None:
        if self.aof:
            self.aof.write(f"SET {key} {value}\n")
            self.aof.flush()  # in the OS page cache: survives a process crash

    def close(self) -> None:
        with self.lock:
            if self.aof:
                self.aof.close()
                self.aof = None


def execute(store: Store, line: str) -> str:
    """The reply (without its final newline) to one command line."""
    cmd, _, rest = line.partition(" ")
    cmd = cmd.upper()
    if cmd == "PING":
        return "+PONG"
    if cmd == "GET" and rest and " " not in rest:
        value = store.data.get(rest)
        return "_" if value is None else "$" + value
    if cmd == "SET" and " " in rest:
        key, value = rest.split(" ", 1)
        store.set(key, value)
        return "+OK"
    if cmd == "INCR":
        key, _, n = rest.partition(" ")
        try:
            return f":{store.incr(key, int(n or '1'))}"
        except ValueError:
            return "-ERR not an integer"
    if cmd == "KEYS" and " " not in rest:
        keys = store.keys(rest)
        return "\n".join([f"*{len(keys)}"] + keys)
    return f"-ERR bad command {cmd!r}"


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        while raw := self.rfile.readline(65536):
            line = raw.decode(errors="replace").rstrip("\r\n")
            reply = execute(self.server.store, line) if line else "-ERR empty command"
            self.wfile.write(reply.encode() + b"\n")


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # idle client connections must not block exit
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], store: Store) -> None:
        super().__init__(address, _Handler)
        self.store = store


def main() -> None:
    store = Store(os.environ.get("MSO_DATA_DIR") or os.environ.get("DATA_DIR"))
    server = _Server(("127.0.0.1", int(os.environ.get("PORT", "6390"))), store)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    where = f"persisted in {store.aof.name}" if store.aof else "in memory only"
    log(f"kvstore listening on 127.0.0.1:{server.server_address[1]}, {len(store.data)} keys, {where}")
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    store.close()
    log("kvstore stopped")


if __name__ == "__main__":
    main()
