"""An HTTP service: twelve-factor, JSON logs, drains on SIGTERM. Standard library only.

Environment: PORT (where to listen, default 8000), GREETING (the answer's message),
MSO_SERVICE / MSO_RELEASE / MSO_REPLICA (set by mso; shown in answers).
Endpoints: /healthz (alive), /ready (503 while starting or draining; says how many
requests are in flight), anything else
answers JSON; `?delay=SECONDS` (at most 30) makes a request slow, to see draining work.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

SERVICE = os.environ.get("MSO_SERVICE", "service")


def log(level: str, msg: str, **fields: object) -> None:
    """One JSON object per line on stdout: what log collectors read."""
    line = {"ts": round(time.time(), 3), "level": level, "service": SERVICE, "msg": msg, **fields}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        started = time.monotonic()
        url = urlsplit(self.path)
        body: dict[str, object]
        if url.path == "/healthz":
            status, body = 200, {"status": "ok"}
        elif url.path == "/ready":
            ready = self.server.ready.is_set()
            status, body = (200, {"status": "ready"}) if ready else (503, {"status": "draining"})
            body["in_flight"] = self.server.in_flight
        else:
            delay = parse_qs(url.query).get("delay", ["0"])[0]
            with self.server.counting():
                try:
                    time.sleep(min(max(float(delay), 0.0), 30.0))
                except ValueError:
                    pass
            status, body = 200, {"message": self.server.greeting, "service": SERVICE,
                                 "release": os.environ.get("MSO_RELEASE"),
                                 "replica": os.environ.get("MSO_REPLICA"), "path": url.path}
        data = json.dumps(body).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if url.path not in ("/healthz", "/ready"):
            log("info", "request", method="GET", path=url.path, status=status,
                ms=round((time.monotonic() - started) * 1000, 1))

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # requests are logged as JSON above


class Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True

    def __init__(self, port: int, greeting: str) -> None:
        super().__init__(("0.0.0.0", port), Handler)
        self.greeting = greeting
        self.ready = threading.Event()
        self.in_flight = 0  # requests being worked on (not probes)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def counting(self) -> Iterator[None]:
        with self._lock:
            self.in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def drain(self) -> None:
        """Stop taking new connections; requests in flight finish (server_close waits)."""
        self.ready.clear()
        threading.Thread(target=self.shutdown, daemon=True).start()


def serve(port: int, greeting: str) -> Server:
    return Server(port, greeting)


def main() -> None:
    server = serve(int(os.environ.get("PORT", "8000")), os.environ.get("GREETING", "hello"))

    def on_term(signum: int, _frame: object) -> None:
        log("info", "draining", signal=signal.Signals(signum).name, in_flight=server.in_flight)
        server.drain()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    server.ready.set()
    log("info", "listening", port=server.server_address[1])
    server.serve_forever()
    server.server_close()  # joins the request threads still running
    log("info", "stopped")


if __name__ == "__main__":
    main()
