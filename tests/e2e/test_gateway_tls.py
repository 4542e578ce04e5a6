"""`gateway.tls` on the embedded engine, with real TLS clients: a certificate from
`mso certs` verified by httpx, TLS 1.0/1.1 refused by the server (openssl s_client), the
plain port's redirect, a certificate renewed under load (new connections get it, no
request fails), and no key material anywhere in .mso/ or the event log."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import mso
from tests.e2e.harness import ECHO, MsoApp, free_port, wait_for

pytestmark = pytest.mark.e2e

MANIFEST = """
app: tlsgw
gateway:
  port: GATEWAY_PORT
  tls: {cert: certs/gateway.pem, key: certs/gateway-key.pem, port: TLS_PORT, hsts: {max_age: 1h}}
routes:
  - {path: /, service: web}
services:
  web:
    run: [PYTHON, ECHO_APP]
    ports: {http: 8000}
    health:
      readiness: {http: /, period: 200ms}
"""


@pytest.fixture
def app(tmp_path: Path) -> Iterator[MsoApp]:
    made = MsoApp(tmp_path)
    made.env["MSO_CA_DIR"] = str(tmp_path / "ca")
    made.env["PYTHONPATH"] = str(Path(mso.__file__).resolve().parents[1])
    yield made
    made.teardown()


def _trust(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def _der(port: int, ca: Path) -> bytes:
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return s.getpeercert(binary_form=True) or b""


def _s_client(port: int, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                           "-servername", "localhost", *flags], input="", text=True,
                          capture_output=True, timeout=30)


def test_gateway_terminates_tls_and_reloads_certificates(app: MsoApp) -> None:
    tls_port = free_port()
    app.write(MANIFEST.replace("TLS_PORT", str(tls_port)))
    made = app.cli("certs")
    assert "localhost" in made.stdout and "update-ca-certificates" in made.stdout
    app.up()
    ca = app.folder / "ca" / "ca.pem"
    assert app.json("endpoints")["gateway_tls"] == f"127.0.0.1:{tls_port}"

    with httpx.Client(verify=_trust(ca), timeout=10) as client:
        r = client.get(f"https://localhost:{tls_port}/hello",
                       headers={"X-Forwarded-Proto": "http"})
    assert r.status_code == 200 and r.http_version == "HTTP/1.1"
    assert r.headers["strict-transport-security"] == "max-age=3600"

    # The server refuses TLS 1.0 and 1.1 (the client, allowed to offer them, sent its
    # hello and was cut off: not its own "no protocols available") and speaks 1.2 and 1.3.
    for old in ("-tls1", "-tls1_1"):
        proc = _s_client(tls_port, old, "-cipher", "DEFAULT@SECLEVEL=0")
        assert proc.returncode != 0, proc.stdout
        assert "no protocols available" not in proc.stderr
        assert ("alert protocol version" in proc.stderr
                or "unexpected eof" in proc.stderr), proc.stderr
    for good, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        proc = _s_client(tls_port, good, "-CAfile", str(ca))
        assert proc.returncode == 0 and f"New, {name}, Cipher is " in proc.stdout, proc.stdout
        assert "Verify return code: 0 (ok)" in proc.stdout, proc.stdout

    status, _ = app.get("/x?y=1")
    assert status == 308

    # Renew the certificate under load: new connections get the new one, none fails.
    before = _der(tls_port, ca)
    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(verify=_trust(ca), timeout=10,
                          limits=httpx.Limits(max_keepalive_connections=0)) as client:
            while not stop.is_set():
                try:
                    got = client.get(f"https://localhost:{tls_port}/")
                    if got.status_code != 200:
                        failures.append(str(got.status_code))
                    served[0] += 1
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: served[0] >= 20, message="requests before the renewal")
        app.cli("certs")
        renewed = ssl.PEM_cert_to_DER_cert((app.folder / "certs" / "gateway.pem").read_text())
        assert renewed != before
        wait_for(lambda: _der(tls_port, ca) == renewed, timeout=20,
                 message="the renewed certificate served")
        mark = served[0]
        wait_for(lambda: served[0] >= mark + 20, message="requests after the renewal")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [], failures[:5]
    reloads = [e for e in app.events() if e["type"] == "gateway.tls_reloaded"]
    assert reloads and "gateway.pem" in reloads[-1]["message"]

    # The key is in its file only: not in the state, the saved table, logs or events.
    key_body = "".join((app.folder / "certs" / "gateway-key.pem").read_text()
                       .splitlines()[1:-1])
    for path in (app.folder / ".mso").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert key_body[:40].encode() not in data, path
            assert b"PRIVATE KEY" not in data, path
    assert "PRIVATE KEY" not in str(app.events())
