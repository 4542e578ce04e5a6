"""The autoscaling benchmark's service: every request takes WORK_MS (default 10 ms) of
work, one request at a time per replica (a lock around the work), so one replica serves
about 1000 / WORK_MS requests/s and queues the rest. GET /ready answers at once."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORK = float(os.environ.get("WORK_MS", "10")) / 1000.0
LOCK = threading.Lock()
REPLICA = os.environ.get("MSO_REPLICA", "?").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path != "/ready":
            with LOCK:
                time.sleep(WORK)
        self.send_response(200)
        self.send_header("Content-Length", str(len(REPLICA)))
        self.end_headers()
        self.wfile.write(REPLICA)

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main() -> None:
    server = Server(("127.0.0.1", int(os.environ["PORT"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
