"""`mso certs`: a local development certificate authority and certificates from it.

The CA is made once, under the user's config folder ($MSO_CA_DIR, else
$XDG_CONFIG_HOME/mso/ca, else ~/.config/mso/ca; folder 0700, key 0600), like mkcert's.
Each run writes a certificate for the hosts asked (the manifest's route hosts by default)
plus localhost, 127.0.0.1 and ::1, to files `gateway.tls` can point to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mso.errors import UsageError

CA_DAYS = 3650
LEAF_DAYS = 397  # what browsers accept for a server certificate's life
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path
    ca_cert: Path
    names: tuple[str, ...]
    ca_created: bool


def ca_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("MSO_CA_DIR"):
        return Path(env["MSO_CA_DIR"])
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") \
        else Path(env.get("HOME", "~")).expanduser() / ".config"
    return base / "mso" / "ca"


def _write_private(path: Path, data: bytes) -> None:
    """Create (or replace) `path` with mode 0600 from the start: no moment world-readable."""
    os.replace(_staged(path, data, 0o600), path)


def _staged(path: Path, data: bytes, mode: int) -> Path:
    """`data` written whole beside `path`, to be renamed over it."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return tmp


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_or_create_ca(folder: Path, now: dt.datetime) -> tuple[x509.Certificate,
                                                                 ec.EllipticCurvePrivateKey, bool]:
    cert_path, key_path = folder / "ca.pem", folder / "ca-key.pem"
    if cert_path.exists() and key_path.exists():
        try:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise UsageError(f"cannot read the development CA in {folder}: {exc}; move the "
                             "folder away to make a new one") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError(f"{key_path}: not the EC key mso makes; move {folder} away")
        return cert, key, False
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    user = os.environ.get("USER") or str(os.getuid())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mso development CA"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"mso development CA ({user})")])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert, key, True


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def check_host(name: str) -> str:
    """A DNS name (wildcard allowed as the first label) or an IP address."""
    host = name.strip().lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    labels = host.split(".")
    ok = bool(host) and len(host) <= 253 and all(
        0 < len(lb) <= 63 and (lb.replace("-", "").isalnum() and lb.isascii()
                               and not lb.startswith("-") and not lb.endswith("-")
                               or (i == 0 and lb == "*" and len(labels) > 2))
        for i, lb in enumerate(labels))
    if not ok:
        raise UsageError(f"{name!r} is not a host name (such as app.localhost or "
                         "*.example.test) nor an IP address")
    return host


def issue(hosts: list[str], out_dir: Path, name: str = "gateway",
          folder: Path | None = None, now: dt.datetime | None = None) -> Issued:
    """Make (once) the CA, then a certificate for `hosts` + LOCAL_NAMES in `out_dir`:
    NAME.pem (the certificate) and NAME-key.pem (its key, 0600)."""
    when = now or dt.datetime.now(dt.timezone.utc)
    folder = folder or ca_dir()
    names: list[str] = []
    for h in [*hosts, *LOCAL_NAMES]:
        checked = check_host(h)
        if checked not in names:
            names.append(checked)
    ca_cert, ca_key, created = _load_or_create_ca(folder, when)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mso development"),
                         x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(when - dt.timedelta(hours=1))
            .not_valid_after(min(when + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
            .add_extension(_san(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False,
                                         False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.pem", out_dir / f"{name}-key.pem"
    # Both written whole first, then renamed back to back: a gateway watching them sees
    # a mismatched pair for microseconds at most, never a half-written file.
    new_key = _staged(key_path, _pem_key(key), 0o600)
    new_cert = _staged(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    os.replace(new_key, key_path)
    os.replace(new_cert, cert_path)
    return Issued(cert_path, key_path, folder / "ca.pem", tuple(names), created)


def trust_hint(ca_cert: Path) -> str:
    """How to make clients trust the development CA."""
    return "\n".join([
        f"To trust the development CA ({ca_cert}):",
        f"  curl:    curl --cacert {ca_cert} https://...",
        f"  Python:  SSL_CERT_FILE={ca_cert} (or httpx.Client(verify='{ca_cert}'))",
        f"  Debian:  sudo cp {ca_cert} /usr/local/share/ca-certificates/mso-dev-ca.crt"
        " && sudo update-ca-certificates",
        "  Firefox/Chrome: Settings > Certificates > Import (Authorities), or with NSS: "
        f"certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n mso-dev-ca -i {ca_cert}",
        "Its key never leaves that folder (0600); anyone who has it can impersonate any "
        "site to this machine, so trust it only here.",
    ])
