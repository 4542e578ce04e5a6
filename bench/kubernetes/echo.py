"""A naive HTTP service for the benchmark: no graceful shutdown (SIGTERM kills it at once).

As PID 1 of its container Python would ignore SIGTERM altogether (the kernel drops
default-action signals to PID 1), and the pod would linger until SIGKILL: exit instead,
as most servers do.
"""

import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("ECHO_VERSION", "v1").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"ok\n" if self.path == "/ready" else VERSION + b"\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8000"))), Handler).serve_forever()
