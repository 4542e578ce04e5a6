"""TLS termination at a gateway listener (mso.proxy.tls), against a real proxy process:
HTTPS with X-Forwarded-Proto and HSTS, SNI selection, TLS 1.0/1.1 refused, redirect,
hot reload of the certificate files without a failed request, bad files refused."""
from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from mso.cli import certs as dev_ca
from mso.proxy.http_server import redirect_response
from mso.proxy.tls import pick

from .conftest import Backend, Proxy, http_table, raw_request


def _client(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _peer_cert(port: int, ca: Path, server_name: str | None) -> dict[str, Any]:
    ctx = _client(ca)
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            return {"der": s.getpeercert(binary_form=True), "alpn": s.selected_alpn_protocol(),
                    "version": s.version(), "cert": s.getpeercert()}


def _get(port: int, ca: Path, host: str, path: str = "/echo",
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=_client(ca), timeout=10)
    # connected to 127.0.0.1, verifying and sending SNI for `host`
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sock = _client(ca).wrap_socket(raw, server_hostname=host)
    conn.request("GET", path, headers={"Host": host, **(headers or {})})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca_dir = tmp_path / "ca"
    one = dev_ca.issue(["app.test"], tmp_path / "one", "gw", folder=ca_dir)
    two = dev_ca.issue(["*.b.test"], tmp_path / "two", "gw", folder=ca_dir)
    return {"ca": one.ca_cert, "cert1": one.cert, "key1": one.key,
            "cert2": two.cert, "key2": two.key}


def _tls_table(backend: Backend, pki: dict[str, Path], rev: str = "1",
               hsts: str = "max-age=600") -> dict[str, Any]:
    table = http_table({"web": {"stable": (100, [backend])}}, tls={
        "certificates": [{"cert": str(pki["cert1"]), "key": str(pki["key1"]), "rev": rev},
                         {"cert": str(pki["cert2"]), "key": str(pki["key2"]), "rev": rev}],
        "hsts": hsts})
    table["listeners"].append({"name": "plain", "bind": "127.0.0.1", "port": 0,
                               "mode": "http", "routes": [], "redirect": 8443})
    return table


@pytest.fixture
def tls_env(pki: dict[str, Path]) -> Iterator[dict[str, Any]]:
    b = Backend("b1")
    p = Proxy()
    ports = p.set_table(_tls_table(b, pki))
    yield {"proxy": p, "ports": ports, "pki": pki, "backend": b}
    p.stop()
    b.kill()


def test_https_forwards_proto_https_and_adds_hsts(tls_env: dict[str, Any]) -> None:
    port, ca = tls_env["ports"]["gw"], tls_env["pki"]["ca"]
    status, headers, body = _get(port, ca, "app.test",
                                 headers={"X-Forwarded-Proto": "http"})
    assert status == 200
    seen = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert seen["x-forwarded-proto"] == "https"  # the client's own is overwritten
    assert headers["strict-transport-security"] == "max-age=600"
    info = _peer_cert(port, ca, "app.test")
    assert info["alpn"] == "http/1.1" and info["version"] in ("TLSv1.2", "TLSv1.3")


def test_sni_picks_the_certificate_and_no_sni_gets_the_default(
        tls_env: dict[str, Any]) -> None:
    port, pki = tls_env["ports"]["gw"], tls_env["pki"]
    default = _peer_cert(port, pki["ca"], None)["der"]
    assert _peer_cert(port, pki["ca"], "app.test")["der"] == default
    assert _peer_cert(port, pki["ca"], "unknown.test")["der"] == default
    wild = _peer_cert(port, pki["ca"], "x.b.test")["der"]
    assert wild != default
    # and a verifying client is happy with the wildcard certificate for its name
    assert _get(port, pki["ca"], "api.b.test")[0] == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_10_and_11_are_refused(tls_env: dict[str, Any]) -> None:
    port = tls_env["ports"]["gw"]
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname = False
        old.verify_mode = ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = old.maximum_version = version
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with pytest.raises(ssl.SSLError):
                old.wrap_socket(raw, server_hostname="app.test")


def test_plain_port_redirects_to_https(tls_env: dict[str, Any]) -> None:
    plain = tls_env["ports"]["plain"]
    reply = raw_request(plain, b"POST /a/b?c=1 HTTP/1.1\r\nHost: app.test:8080\r\n"
                               b"Content-Length: 0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 308 ")
    assert b"\r\nlocation: https://app.test:8443/a/b?c=1\r\n" in reply
    assert b"strict-transport-security" not in reply.lower()  # never over plain HTTP
    assert raw_request(plain, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_hot_reload_serves_new_certificate_without_failed_requests(
        tls_env: dict[str, Any], tmp_path: Path) -> None:
    p, port, pki, b = (tls_env[k] for k in ("proxy", "ports", "pki", "backend"))
    port = port["gw"]
    before = _peer_cert(port, pki["ca"], "app.test")["der"]
    # a keep-alive connection opened before the reload keeps working after it
    kept = http.client.HTTPSConnection("app.test", port, context=_client(pki["ca"]), timeout=10)
    kept.sock = _client(pki["ca"]).wrap_socket(
        socket.create_connection(("127.0.0.1", port)), server_hostname="app.test")
    kept.request("GET", "/echo")
    assert kept.getresponse().read()
    failures: list[str] = []
    served = [0]
    stop = threading.Event()

    def load() -> None:  # new TLS connections, one request each, all through the reloads
        while not stop.is_set():
            try:
                status = _get(port, pki["ca"], "app.test")[0]
                if status != 200:
                    failures.append(str(status))
                served[0] += 1
            except (OSError, http.client.HTTPException) as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for rev in range(2, 6):
            fresh = dev_ca.issue(["app.test"], tmp_path / f"r{rev}", "gw",
                                 folder=pki["ca"].parent)
            pki["cert1"].write_bytes(fresh.cert.read_bytes())
            pki["key1"].write_bytes(fresh.key.read_bytes())
            p.call("set_table", _tls_table(b, pki, rev=str(rev)))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:5]
    assert served[0] > 0
    after = _peer_cert(port, pki["ca"], "app.test")["der"]
    assert after != before and after == _der(pki["cert1"])
    kept.request("GET", "/echo")
    assert kept.getresponse().status == 200


def _der(pem: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.read_text())


def test_bad_certificate_is_refused_and_the_old_one_kept(tls_env: dict[str, Any]) -> None:
    p, port, pki, b = (tls_env[k] for k in ("proxy", "ports", "pki", "backend"))
    before = _peer_cert(port["gw"], pki["ca"], "app.test")["der"]
    wrong = dict(pki, key1=pki["key2"])  # another certificate's key
    with pytest.raises(Exception) as err:
        p.call("set_table", _tls_table(b, wrong, rev="9"))
    message = str(err.value)
    assert "key values mismatch" in message and str(pki["cert1"]) in message
    assert "PRIVATE KEY" not in message
    missing = dict(pki, cert2=pki["cert2"].with_name("nope.pem"))
    with pytest.raises(Exception, match="not found"):
        p.call("set_table", _tls_table(b, missing, rev="10"))
    assert _peer_cert(port["gw"], pki["ca"], "app.test")["der"] == before
    assert _get(port["gw"], pki["ca"], "app.test")[0] == 200


def test_pick_exact_then_wildcard_else_default() -> None:
    a, w = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    names = {"app.test": a, "*.b.test": w}
    assert pick(names, "APP.test.") is a
    assert pick(names, "x.b.test") is w
    assert pick(names, "y.x.b.test") is None  # a wildcard covers one label only
    assert pick(names, "b.test") is None
    assert pick(names, None) is None


@pytest.mark.parametrize("host, url, port, location", [
    (b"app.test:8080", b"/a?b=1", 8443, b"https://app.test:8443/a?b=1"),
    (b"app.test", b"/", 443, b"https://app.test/"),
    (b"[::1]:8080", b"/x", 8443, b"https://[::1]:8443/x"),
    (None, b"http://app.test:80/p", 443, b"https://app.test/p"),
])
def test_redirect_keeps_host_and_target(host: bytes | None, url: bytes, port: int,
                                        location: bytes) -> None:
    reply = redirect_response(host, url, port)
    assert reply.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
    assert b"\r\nlocation: " + location + b"\r\n" in reply


def test_redirect_without_a_host_is_400() -> None:
    assert redirect_response(None, b"/", 443).startswith(b"HTTP/1.1 400")
    assert redirect_response(b"", b"/", 443).startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("tls, words", [
    ({}, "missing required field 'certificates'"),
    ({"certificates": []}, "at least one certificate"),
    ({"certificates": [{"cert": "c.pem"}]}, "missing required field 'key'"),
    ({"certificates": [{"cert": "c", "key": "k"}], "hsts": "max-age=1\r\nx: y"},
     "hsts: expected a header value"),
])
def test_table_tls_errors_name_the_field(tls: dict[str, Any], words: str) -> None:
    from mso.proxy.table import TableError, parse_table
    raw = {"version": 1, "clusters": {}, "listeners": [
        {"name": "gw", "port": 0, "mode": "http", "routes": [], "tls": tls}]}
    with pytest.raises(TableError, match="listeners\\[0\\].tls"):
        parse_table(raw)
    with pytest.raises(TableError) as err:
        parse_table(raw)
    assert words in str(err.value)
