"""Checks of the gateway's PEM certificate and key files (`gateway.tls`), for `mso validate`.

Reads the files with `cryptography`; a message names the file and what is wrong with it,
never anything of the key. Pure apart from reading the two files; the time is passed in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

__all__ = ["CertInfo", "EXPIRY_WARNING", "inspect_pair"]

#: A certificate that expires sooner than this is warned about.
EXPIRY_WARNING = dt.timedelta(days=14)


@dataclass(frozen=True)
class CertInfo:
    names: tuple[str, ...]  # DNS names (subjectAltName, else the common name)
    not_after: dt.datetime

    def expiry_problem(self, now: dt.datetime) -> tuple[bool, str] | None:
        """(is an error, message) when expired or expiring within EXPIRY_WARNING."""
        if self.not_after <= now:
            return True, f"certificate expired on {self.not_after:%Y-%m-%d %H:%M} UTC"
        if self.not_after - now < EXPIRY_WARNING:
            days = (self.not_after - now).days
            return False, (f"certificate expires in {days} day{'s' if days != 1 else ''} "
                           f"({self.not_after:%Y-%m-%d %H:%M} UTC)")
        return None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{what} file {str(path)!r} not found") from None
    except OSError as exc:
        raise ValueError(f"cannot read {what} file {str(path)!r}: "
                         f"{(exc.strerror or type(exc).__name__).lower()}") from None


def inspect_pair(cert_path: Path, key_path: Path) -> CertInfo:
    """Parse both files; ValueError (a message for the user) when they cannot serve TLS."""
    raw_cert = _read(cert_path, "certificate")
    raw_key = _read(key_path, "key")
    try:
        chain = x509.load_pem_x509_certificates(raw_cert)
    except ValueError:
        raise ValueError(f"{str(cert_path)!r} holds no PEM certificate "
                         "(-----BEGIN CERTIFICATE-----)") from None
    try:
        key = serialization.load_pem_private_key(raw_key, password=None)
    except TypeError:
        raise ValueError(f"key file {str(key_path)!r} is encrypted; the gateway needs it "
                         "unencrypted (e.g. openssl pkey -in KEY -out KEY.plain)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"{str(key_path)!r} holds no PEM private key "
                         "(-----BEGIN PRIVATE KEY-----)") from None
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise ValueError(f"key {str(key_path)!r} does not match certificate "
                         f"{str(cert_path)!r} (another key pair)")
    return CertInfo(names=cert_names(leaf), not_after=leaf.not_valid_after_utc)


def cert_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate is valid for (lower case)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(n.lower() for n in names)


def names_in_file(path: str) -> tuple[str, ...]:
    """The DNS names of a PEM certificate file; none when it cannot be read or parsed
    (a gateway then gives every client its default certificate)."""
    try:
        return cert_names(x509.load_pem_x509_certificate(Path(path).read_bytes()))
    except (OSError, ValueError):
        return ()
