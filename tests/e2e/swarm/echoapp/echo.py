"""A tiny HTTP service for the Swarm e2e tests: binds 127.0.0.1:$PORT like a local-engine
app, answers its release, and fails a fraction ERROR_RATE of requests with a 500."""

from __future__ import annotations

import os
import random
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 200
        if self.path not in ("/ready", "/healthz") and \
                random.random() < float(os.environ.get("ERROR_RATE", "0")):
            status = 500
        body = f"{os.environ.get('VERSION', '?')} {os.environ.get('MSO_REPLICA')}\n".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8000"))), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("echo listening", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
