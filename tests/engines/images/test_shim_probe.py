"""The healthcheck half of the in-container shim, against real sockets on loopback,
run as Docker runs it (`python3 -I -S shim.py probe ...`, a new process each time)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from mso.engines.images import shim


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(200 if self.path == "/ready" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def _probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-S", shim.__file__, "probe", *args],
                          capture_output=True, text=True, timeout=30)


def test_http_probe_passes_on_2xx_and_names_the_status_otherwise(server: int) -> None:
    assert _probe("http", str(server), "/ready", "2").returncode == 0
    failed = _probe("http", str(server), "/other", "2")
    assert failed.returncode == 1 and failed.stdout.strip() == "HTTP GET /other returned 503"


def test_a_port_that_is_closed_or_not_http_fails_with_the_reason() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        refused = _probe("http", str(port), "/ready", "2")  # bound, not listening
        assert refused.returncode == 1 and "refused" in refused.stdout
        assert _probe("tcp", str(port), "2").returncode == 1
        held.listen(1)
        assert _probe("tcp", str(port), "2").returncode == 0

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)

        def answer() -> None:
            conn, _ = silent.accept()
            conn.recv(1024)
            conn.sendall(b"SSH-2.0-not-http\r\n")
            conn.close()
        threading.Thread(target=answer, daemon=True).start()
        garbage = _probe("http", str(silent.getsockname()[1]), "/ready", "2")
        assert garbage.returncode == 1 and "failed" in garbage.stdout
