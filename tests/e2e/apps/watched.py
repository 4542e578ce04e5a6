"""A small HTTP service for `mso up --watch` tests: answers GET / with the content of
$CONTENT_FILE (default content.txt) as read at start, or again on SIGHUP. Content starting
with `crash` makes it exit 1 at start (a broken edit)."""

import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PATH = Path(os.environ.get("CONTENT_FILE", "content.txt"))
state = {"content": ""}


def load(*_: object) -> None:
    text = PATH.read_text().strip()
    if text.startswith("crash"):
        print("starting with", text, flush=True)
        sys.stderr.write(f"fatal: bad content {text!r}\n")
        sys.stderr.flush()
        if not state["content"]:
            sys.exit(1)
    state["content"] = text


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        data = state["content"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


load()
signal.signal(signal.SIGHUP, load)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
server.daemon_threads = True
server.serve_forever()
