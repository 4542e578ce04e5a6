"""The compose e2e's web service: counts its hits in Redis (RESP over a socket: the image
has no Redis client library) and answers "hits N VERSION"."""

import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = (Path(__file__).parent / "VERSION").read_text().strip()
REDIS = (os.environ["REDIS_HOST"], int(os.environ["REDIS_PORT"]))
local = threading.local()


def incr() -> int:
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = socket.create_connection(REDIS, timeout=5).makefile("rwb")
    try:
        conn.write(b"*2\r\n$4\r\nINCR\r\n$4\r\nhits\r\n")
        conn.flush()
        line = conn.readline()
    except OSError:
        local.conn = None
        raise
    if not line.startswith(b":"):
        local.conn = None
        raise RuntimeError(f"redis answered {line!r}")
    return int(line[1:])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status, body = 200, f"hits {incr()} {VERSION}" if self.path != "/healthz" else "ok"
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


server = ThreadingHTTPServer(("0.0.0.0", 8000), Handler)
server.daemon_threads = True
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
print(f"web {VERSION} on 8000, redis at {REDIS[0]}:{REDIS[1]}", flush=True)
server.serve_forever()
