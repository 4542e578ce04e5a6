"""The web service of the container e2e tests: answers "<replica> <release> <VERSION>"
on $PORT (all interfaces: it runs in a container), its config file on /config, what its
dependency `plain` answers on /dep, and prints its secret's length (never its value)."""

import os
import signal
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = (Path(__file__).parent / "VERSION").read_text().strip()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/config":
            body = Path(os.environ["MSO_CONFIG_DIR"], "web.conf").read_text()
        elif self.path == "/dep":  # a dependency, through its stable address
            with urllib.request.urlopen(os.environ["PLAIN_URL"] + "/", timeout=5) as answer:
                body = f"plain answered {answer.status}"
        else:
            body = f"{os.environ.get('MSO_REPLICA')} {os.environ.get('MSO_RELEASE')} {VERSION}"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    secret = Path("/run/secrets/token")
    print(f"secret token: {len(secret.read_text()) if secret.exists() else 0} bytes", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"{os.environ.get('MSO_REPLICA')} {VERSION} listening on {os.environ['PORT']}",
          flush=True)
    server.serve_forever()
    print("stopped on SIGTERM", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
