"""`gateway.tls`: the forms it takes, its file checks (file:line, no key content), the
expiry warning, `mso certs`, and its place in the route table (paths only)."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mso.cli import certs as dev_ca
from mso.controllers.routing import GatewayTls, RouteView, ServiceRouting, build_table
from mso.errors import UsageError
from mso.proxy.table import parse_table
from mso.spec.errors import ManifestError
from mso.spec.load import load_manifest

BASE = ("app: t\nservices:\n  web: {run: [python3, app.py], ports: {http: 8000}}\n"
        "gateway:\n  port: 8080\n")


@pytest.fixture
def pair(tmp_path: Path) -> dev_ca.Issued:
    return dev_ca.issue(["app.test"], tmp_path / "certs", "gw", folder=tmp_path / "ca")


def load(tmp_path: Path, tls: str, check: bool = True) -> object:
    (tmp_path / "mso.yaml").write_text(BASE + tls)
    return load_manifest(tmp_path / "mso.yaml", {}, check_files=check)


def test_forms_and_defaults(tmp_path: Path, pair: dev_ca.Issued) -> None:
    one = load(tmp_path, "  tls: {cert: certs/gw.pem, key: certs/gw-key.pem}\n")
    tls = one.manifest.gateway.tls  # type: ignore[attr-defined]
    assert (tls.port, tls.redirect, tls.hsts) == (8443, True, None)
    listed = load(tmp_path, "  tls: [{cert: certs/gw.pem, key: certs/gw-key.pem}]\n")
    assert listed.manifest.gateway.tls.pairs() == [  # type: ignore[attr-defined]
        ("certs/gw.pem", "certs/gw-key.pem", "gateway.tls.certificates.0")]
    hsts = load(tmp_path, "  tls:\n    cert: certs/gw.pem\n    key: certs/gw-key.pem\n"
                          "    hsts: {max_age: 24h, include_subdomains: true}\n")
    assert hsts.manifest.gateway.tls.hsts.header() == \
        "max-age=86400; includeSubDomains"  # type: ignore[attr-defined]


@pytest.mark.parametrize("tls, field, words", [
    ("  tls: {cert: certs/gw.pem}\n", "gateway.tls.key", "cert and key go together"),
    ("  tls: {}\n", "gateway.tls", "write cert and key"),
    ("  tls: {cert: certs/gw.pem, key: certs/gw-key.pem, port: 8080}\n", "gateway.tls.port",
     "give HTTPS its own port"),
    ("  tls: {cert: ../gw.pem, key: certs/gw-key.pem}\n", "gateway.tls.cert", "escapes"),
    ("  tls: {cert: nope.pem, key: certs/gw-key.pem}\n", "gateway.tls", "not found"),
    ("  tls: {cert: certs/gw-key.pem, key: certs/gw-key.pem}\n", "gateway.tls",
     "holds no PEM certificate"),
    ("  tls: {cert: certs/gw.pem, key: certs/gw.pem}\n", "gateway.tls", "holds no PEM private key"),
    ("  tls:\n    certificates:\n      - {cert: certs/gw.pem, key: certs/other-key.pem}\n",
     "gateway.tls.certificates.0", "does not match certificate"),
])
def test_mistakes_are_reported_at_their_line(tmp_path: Path, pair: dev_ca.Issued, tls: str,
                                             field: str, words: str) -> None:
    dev_ca.issue(["other.test"], tmp_path / "certs", "other", folder=tmp_path / "ca")
    with pytest.raises(ManifestError) as info:
        load(tmp_path, tls)
    err = info.value.errors[0]
    assert err.field == field and words in err.message, str(info.value)
    assert err.line is not None and err.line >= 6
    assert "BEGIN" not in str(info.value).replace("-----BEGIN CERTIFICATE-----", "") \
        .replace("-----BEGIN PRIVATE KEY-----", "")  # names the format, never content


def _self_signed(folder: Path, not_after: dt.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(not_after - dt.timedelta(days=30)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    folder.mkdir(exist_ok=True)
    (folder / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def test_expired_is_an_error_and_expiring_soon_a_warning(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    _self_signed(tmp_path / "old", now - dt.timedelta(days=1))
    with pytest.raises(ManifestError, match=r"mso.yaml:7: gateway.tls.cert: certificate expired"):
        load(tmp_path, "  tls:\n    cert: old/c.pem\n    key: old/k.pem\n")
    _self_signed(tmp_path / "old", now + dt.timedelta(days=5))
    loaded = load(tmp_path, "  tls:\n    cert: old/c.pem\n    key: old/k.pem\n")
    warnings = loaded.command_warnings()  # type: ignore[attr-defined]
    assert [w.field for w in warnings] == ["gateway.tls.cert"]
    assert "warning: certificate expires in 4 days" in warnings[0].message


def test_mso_certs_makes_a_ca_once_and_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "mso.yaml").write_text(BASE + "routes:\n  - {host: shop.test, service: web}\n")
    env = dict(os.environ, MSO_CA_DIR=str(tmp_path / "ca"),
               PYTHONPATH=str(Path(dev_ca.__file__).resolve().parents[2]))  # this mso
    run = [sys.executable, "-m", "mso", "certs"]
    first = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "created the development CA" in first.stdout and "update-ca-certificates" in first.stdout
    ca_key = tmp_path / "ca" / "ca-key.pem"
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "ca").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "certs" / "gateway-key.pem").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "gateway.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["shop.test", "localhost"]
    before = ca_key.read_bytes()
    again = subprocess.run(run + ["x.test", "--name", "x"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "created" not in again.stdout
    assert ca_key.read_bytes() == before  # the CA is made once
    bad = subprocess.run(run + ["not a host"], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "is not a host name" in bad.stderr
    assert "Traceback" not in bad.stderr
    with pytest.raises(UsageError):
        dev_ca.check_host("a..b")


def test_route_table_carries_paths_only_and_redirects_the_plain_port(
        pair: dev_ca.Issued) -> None:
    tls = GatewayTls(port=8443, certificates=[(str(pair.cert), str(pair.key), "r1")],
                     hsts="max-age=60")
    svc = ServiceRouting("web", {"http": ("http", 40000)})
    table = build_table(bind="127.0.0.1", gateway_port=8080, metrics_port=None,
                        routes=[RouteView("/", None, "web", "http")], services=[svc], tls=tls)
    text = json.dumps(table)
    assert "PRIVATE" not in text and pair.key.read_text() not in text
    gw, gw_tls = table["listeners"][0], table["listeners"][1]
    assert gw["redirect"] == 8443 and gw["routes"] == []
    assert gw_tls["name"] == "gateway-tls" and gw_tls["routes"][0]["cluster"] == "web/http"
    parsed = parse_table({"version": 1, **table})
    assert parsed.listeners[1].tls is not None and parsed.listeners[1].tls.hsts == "max-age=60"
    plain = build_table(bind="127.0.0.1", gateway_port=8080, metrics_port=None,
                        routes=[RouteView("/", None, "web", "http")], services=[svc],
                        tls=GatewayTls(port=8443, certificates=tls.certificates,
                                       redirect=False))
    assert plain["listeners"][0]["routes"] and "redirect" not in plain["listeners"][0]
