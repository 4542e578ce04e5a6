"""The conformance suite's app: the same file runs on the embedded engine, Swarm and
Kubernetes, and reports what the engine gave it, over HTTP and in its log.

GET  /                  -> JSON: replica, release, PORT and PORT_*, SHOW_* env values,
                           when it started, what its dependency answered at start, the
                           traceparent it was sent, its uid and gid
                           (with FAIL_STATUS=N, every GET of / answers N instead)
GET  /digest?name=VAR   -> sha256 of $VAR (never the value), or "unset"
GET  /ready             -> 200, or 503 after POST /unready (this replica)
GET  /healthz           -> 200, or never answers after POST /hang (this replica)
POST /upload            -> JSON: body_len, the bytes of request body it read
GET  /metrics           -> Prometheus text: app_requests_total{release} (GETs of /) and
                           app_errors_total{release}: with APP_ERRORS=1 every GET of / is
                           counted as an error the app itself knows of, while it still
                           answers 200 (so only a metric provider can see it, not mso's proxy)
Signals: prints `conform: received SIGNAME` and exits 0 (SIGTERM, SIGINT, SIGQUIT,
SIGHUP, SIGUSR1, SIGUSR2). Env: READY_AFTER (seconds before /ready answers 200),
EXIT_AFTER (seconds, then exit with EXIT_CODE), DEPENDENCY (a <SERVICE>_URL variable to
GET once at start), JOB (run as a job: print, sleep JOB_SECONDS, exit JOB_EXIT or 0).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

STARTED = time.time()
STATE = {"unready": False, "hung": False}
COUNTS = {"requests": 0, "errors": 0}
COUNT_LOCK = threading.Lock()


def say(message: str) -> None:
    print(f"conform: {message} at {time.time():.3f}", flush=True)


def dependency_at_start() -> str:
    name = os.environ.get("DEPENDENCY")
    if not name:
        return "none"
    url = os.environ.get(name, "")
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return f"answered {response.status}"
    except Exception as exc:  # any failure is the answer
        return f"failed: {type(exc).__name__}"


DEPENDENCY = dependency_at_start()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, status: int, body: str, kind: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/healthz":
            while STATE["hung"]:
                time.sleep(1)
            self._send(200, "ok")
        elif url.path == "/ready":
            early = time.time() - STARTED < float(os.environ.get("READY_AFTER", "0"))
            bad = STATE["unready"] or early
            self._send(503 if bad else 200, "unready" if bad else "ready")
        elif url.path == "/metrics":
            release = os.environ.get("MSO_RELEASE", "")
            with COUNT_LOCK:
                requests, errors = COUNTS["requests"], COUNTS["errors"]
            self._send(200, "# TYPE app_requests_total counter\n"
                       f'app_requests_total{{release="{release}"}} {requests}\n'
                       "# TYPE app_errors_total counter\n"
                       f'app_errors_total{{release="{release}"}} {errors}\n',
                       "text/plain; version=0.0.4")
        elif url.path == "/digest":
            name = parse_qs(url.query).get("name", [""])[0]
            value = os.environ.get(name)
            self._send(200, "unset" if value is None
                       else hashlib.sha256(value.encode()).hexdigest())
        else:
            with COUNT_LOCK:
                COUNTS["requests"] += 1
                COUNTS["errors"] += int(os.environ.get("APP_ERRORS") == "1")
            env = os.environ
            body = {
                "replica": env.get("MSO_REPLICA"), "release": env.get("MSO_RELEASE"),
                "port": env.get("PORT"),
                "ports": {k[5:].lower(): v for k, v in env.items() if k.startswith("PORT_")},
                "show": {k[5:]: v for k, v in env.items() if k.startswith("SHOW_")},
                "started": STARTED, "dependency": DEPENDENCY, "pid": os.getpid(),
                "traceparent": self.headers.get("traceparent"),
                "forwarded_proto": self.headers.get("x-forwarded-proto"),
                "uid": os.getuid(), "gid": os.getgid(),
            }
            self._send(int(env.get("FAIL_STATUS") or 200), json.dumps(body), "application/json")

    def do_POST(self) -> None:
        if self.path == "/unready":
            STATE["unready"] = True
        elif self.path == "/hang":
            STATE["hung"] = True
        size = self._read_body()
        if self.path.startswith("/upload"):
            self._send(200, json.dumps({"body_len": size}), "application/json")
            return
        self._send(200, "ok")

    def _read_body(self) -> int:
        """Read (and count) the request body: Content-Length or chunked."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            size = 0
            while True:
                n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return size
                size += len(self.rfile.read(n))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return len(self.rfile.read(length)) if length else 0

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def on_signal(number: int, frame: object) -> None:
    say(f"received {signal.Signals(number).name}")
    os._exit(0)


def main() -> None:
    for name in ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"):
        signal.signal(getattr(signal, name), on_signal)
    if os.environ.get("JOB"):
        say("job started")
        time.sleep(float(os.environ.get("JOB_SECONDS", "0")))
        code = int(os.environ.get("JOB_EXIT", "0"))
        if code:
            say(f"job failing with {code}")
            sys.exit(code)
        say("job done")
        return
    # 127.0.0.1 on every engine: in a container mso's shim or sidecar relays to it.
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    say(f"started (release {os.environ.get('MSO_RELEASE')}, dependency {DEPENDENCY})")
    exit_after = os.environ.get("EXIT_AFTER")
    if exit_after is not None:
        def leave() -> None:
            time.sleep(float(exit_after))
            say(f"exiting with {os.environ.get('EXIT_CODE', '0')}")
            os._exit(int(os.environ.get("EXIT_CODE", "0")))
        threading.Thread(target=leave, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
