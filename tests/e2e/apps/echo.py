"""A tiny HTTP service for end-to-end tests, controllable through files.

- GET /        -> 200 "<replica> <release>" (after DELAY_MS if set)
- GET /healthz -> 500 when $CONTROL_DIR/<replica>.unlive exists
- GET /ready   -> 503 when $CONTROL_DIR/<replica>.unready exists
- ERROR_RATE (0..1) makes / answer 500 that often; PRINT_SECRET prints $MSO_SECRETS/token.
"""

import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPLICA = os.environ.get("MSO_REPLICA", "?")
RELEASE = os.environ.get("MSO_RELEASE", "?")
CONTROL = Path(os.environ.get("CONTROL_DIR", "/nonexistent"))
DELAY = float(os.environ.get("DELAY_MS", "0")) / 1000.0
ERROR_RATE = float(os.environ.get("ERROR_RATE", "0"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/healthz":
            bad = (CONTROL / f"{REPLICA}.unlive").exists()
            self._send(500 if bad else 200, "unhealthy" if bad else "ok")
        elif self.path == "/ready":
            bad = (CONTROL / f"{REPLICA}.unready").exists()
            self._send(503 if bad else 200, "unready" if bad else "ready")
        else:
            if DELAY:
                time.sleep(DELAY)
            if ERROR_RATE and random.random() < ERROR_RATE:
                self._send(500, f"error from {REPLICA}")
            else:
                self._send(200, f"{REPLICA} {RELEASE} {os.environ.get('GREETING', '')}")

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    if os.environ.get("PRINT_SECRET"):
        secret = (Path(os.environ["MSO_SECRETS"]) / "token").read_text()
        print(f"loaded token {secret}", flush=True)
    if os.environ.get("SPAWN_GRANDCHILD"):
        import subprocess
        subprocess.Popen(["sleep", "1000"], start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"{REPLICA} listening on {os.environ['PORT']}", flush=True)
    server.serve_forever()
    print(f"{REPLICA} stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
