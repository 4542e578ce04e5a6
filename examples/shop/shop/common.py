"""Server boilerplate shared by the shop's HTTP services.

Everything a well-behaved service under an orchestrator needs, in one place so
each service file only holds its own routes:

- `App`: a tiny router (`@app.get("/orders/{id}")`) returning `Response` values;
- `serve(app)`: binds 127.0.0.1:$PORT with HTTP/1.1 keep-alive, answers
  `/healthz` (liveness) and `/ready` (readiness), logs one line per request and
  drains gracefully on SIGTERM (stop accepting, finish in-flight, exit 0);
- `call(service, ...)`: JSON calls to another service found through the
  `<SERVICE>_URL` discovery variable, with a timeout; failures become
  `UpstreamError`, which `serve` turns into a clear 502/503 JSON answer.

Standard library only: mso runs these with the system `python3`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from shop.kv import KVError

_log_lock = threading.Lock()


def log(message: str) -> None:
    """One line on stdout, flushed at once: mso reads our stdout from a file."""
    who = os.environ.get("MSO_REPLICA") or os.environ.get("MSO_SERVICE") or "shop"
    stamp = time.strftime("%H:%M:%S")
    with _log_lock:
        try:
            print(f"{stamp} {who} {message}", flush=True)
        except OSError:  # stdout gone (closed pipe, full disk): keep serving anyway
            pass


class HTTPError(Exception):
    """Raised by a handler to answer `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class UpstreamError(HTTPError):
    """A service we depend on failed, timed out or is not configured."""

    def __init__(self, service: str, reason: str, status: int = 502) -> None:
        super().__init__(status, f"{service} unavailable: {reason}", upstream=service)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"{}")
        except ValueError as exc:
            raise HTTPError(400, f"body is not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise HTTPError(400, "body must be a JSON object")
        return data

    def query_int(self, name: str, default: int, maximum: int = 1000) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) > maximum:
            raise HTTPError(400, f"{name} must be an integer from 0 to {maximum}")
        return int(raw)


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode() + b"\n")


def html_response(text: str, status: int = 200) -> Response:
    return Response(status, text.encode(), "text/html; charset=utf-8")


def redirect(location: str) -> Response:
    return Response(303, b"", "text/plain", {"Location": location})


Handler = Callable[[Request], Response]
ReadyCheck = Callable[[], "str | None"]  # None when ready, else the reason


class App:
    """Routes for one service. `strip_prefix` lets the gateway's `/api/...`
    routes reach the service unchanged (mso does not rewrite paths)."""

    def __init__(self, name: str, ready: ReadyCheck | None = None, strip_prefix: str = "") -> None:
        self.name = name
        self.ready = ready or (lambda: None)
        self.strip_prefix = strip_prefix
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

        def register(handler: Handler) -> Handler:
            self._routes.append((method, pattern, handler))
            return handler

        return register

    def get(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("GET", path)

    def post(self, path: str) -> Callable[[Handler], Handler]:
        return self.route("POST", path)

    def handle(self, req: Request) -> Response:
        if self.strip_prefix and req.path.startswith(self.strip_prefix + "/"):
            req.path = req.path[len(self.strip_prefix):]
        if req.path == "/healthz":
            return json_response({"ok": True})
        if req.path == "/ready":
            reason = self.ready()
            return json_response({"ready": reason is None, "reason": reason}, 200 if reason is None else 503)
        allowed = []
        for method, pattern, handler in self._routes:
            match = pattern.match(req.path)
            if match and method == req.method:
                req.params = match.groupdict()
                return handler(req)
            if match:
                allowed.append(method)
        if allowed:
            raise HTTPError(405, f"method {req.method} not allowed on {req.path}")
        raise HTTPError(404, f"no route for {req.path}")


def service_url(service: str) -> str:
    """The stable address of a dependency, from mso's discovery variables."""
    url = os.environ.get(f"{service.upper().replace('-', '_')}_URL")
    if not url:
        raise UpstreamError(service, f"{service.upper()}_URL is not set", status=503)
    return url.rstrip("/")


def call(service: str, method: str, path: str, body: Any = None, timeout: float = 2.0) -> tuple[int, Any]:
    """JSON request to a dependency. 2xx-4xx come back as (status, data);
    unreachable, timed out, 5xx or garbled answers raise UpstreamError."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(service_url(service) + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (OSError, ValueError) as exc:  # URLError, timeouts, resets, bad URL
        raise UpstreamError(service, str(getattr(exc, "reason", exc))) from exc
    try:
        data = json.loads(raw or b"null")
    except ValueError as exc:
        raise UpstreamError(service, f"answered {status} with invalid JSON") from exc
    if status >= 500:
        reason = data.get("error") if isinstance(data, dict) else None
        raise UpstreamError(service, f"answered {status}" + (f" ({reason})" if reason else ""))
    return status, data


class _Server(ThreadingHTTPServer):
    """Counts in-flight requests so a SIGTERM can wait for them to finish."""

    daemon_threads = True  # idle keep-alive connections must not block exit
    request_queue_size = 128  # the default 5 resets connections under a burst

    def __init__(self, address: tuple[str, int], app: App) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self.draining = False
        self.inflight = 0
        self.idle = threading.Condition()

    def wait_idle(self, timeout: float) -> bool:
        with self.idle:
            return self.idle.wait_for(lambda: self.inflight == 0, timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    timeout = 60  # drop connections a client abandoned mid-request
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    do_PUT = do_PATCH = do_DELETE = do_POST  # answered with a JSON 405 by App.handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # we log once per request ourselves, with the latency

    def _dispatch(self) -> None:
        server = self.server
        with server.idle:
            server.inflight += 1
        started = time.monotonic()
        resp = Response(500, b"")
        try:
            resp = self._respond()  # never raises: errors become answers
            self._send(resp)
        except OSError:  # the client went away; nothing left to tell it
            self.close_connection = True
        finally:
            with server.idle:
                server.inflight -= 1
                server.idle.notify_all()
        ms = (time.monotonic() - started) * 1000
        # Passing health probes arrive every second; logging them would drown the rest.
        if self.path not in ("/healthz", "/ready") or resp.status >= 400:
            log(f"{self.command} {self.path} {resp.status} {ms:.1f}ms")

    def _respond(self) -> Response:
        url = urlsplit(self.path)
        try:
            req = Request(self.command, url.path, dict(parse_qsl(url.query)),
                          {k.lower(): v for k, v in self.headers.items()}, self._read_body())
            return self.server.app.handle(req)
        except HTTPError as exc:
            return json_response({"error": str(exc), **exc.extra}, exc.status)
        except KVError as exc:
            return json_response({"error": f"kvstore unavailable: {exc}", "upstream": "kvstore"}, 503)
        except Exception:  # a bug: answer 500 rather than drop the connection
            traceback.print_exc(file=sys.stderr)
            return json_response({"error": "internal error"}, 500)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        self.send_header("X-Served-By", os.environ.get("MSO_REPLICA", self.server.app.name))
        for name, value in resp.headers.items():
            self.send_header(name, value)
        if self.server.draining:
            self.close_connection = True  # tell keep-alive clients to reconnect elsewhere
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)


def serve(app: App, grace: float = 5.0) -> None:
    """Run `app` on 127.0.0.1:$PORT until SIGTERM/SIGINT, then drain and return."""
    port = int(os.environ.get("PORT", "8000"))
    server = _Server(("127.0.0.1", port), app)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    log(f"{app.name} listening on http://127.0.0.1:{server.server_address[1]}")
    while not stop.wait(0.5):
        pass
    log(f"{app.name} stopping: no new connections, finishing {server.inflight} in-flight request(s)")
    server.draining = True
    server.shutdown()  # stops the accept loop
    server.server_close()  # closes the listening socket
    finished = server.wait_idle(grace)
    log(f"{app.name} stopped" + ("" if finished else f" ({server.inflight} request(s) cut off)"))
