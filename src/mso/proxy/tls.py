"""TLS termination for a gateway listener: SSL contexts, SNI selection, hot reload.

One `ServerTls` per TLS listener. Its `context` is given to `create_server(ssl=...)` once
and holds the default certificate (clients without SNI, or with a name no certificate
covers); its `sni_callback` switches each handshake to the context of the certificate
whose names cover the client's server name (exact first, then `*.parent`). `load`
rebuilds the per-certificate contexts from the files and reloads the default into the
listening context in place, so new connections get the new certificates while open ones
keep theirs: nothing is closed or rebound.

Settings follow Mozilla's "intermediate" profile: TLS 1.2 and 1.3 only, ECDHE with AEAD
ciphers, no compression, no renegotiation; ALPN offers http/1.1 only. The key files are
read here, by the proxy, and never travel in a route table.
"""
from __future__ import annotations

import ssl
from pathlib import Path

from .table import CertSpec, TableError, TlsSpec

#: Mozilla intermediate (v5.7) TLS 1.2 cipher suites, ECDHE only (no DH parameters).
INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])


def new_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(INTERMEDIATE_CIPHERS)  # TLS 1.3 suites are all modern: OpenSSL's default
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load_chain(ctx: ssl.SSLContext, spec: CertSpec, where: str) -> None:
    try:
        ctx.load_cert_chain(spec.cert, spec.key)
    except FileNotFoundError as exc:
        raise TableError(f"{where}: {exc.filename or spec.cert!r} not found") from None
    except OSError as exc:  # also ssl.SSLError: never the files' content in the message
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise TableError(f"{where}: cannot use certificate {spec.cert!r} with key "
                         f"{spec.key!r}: {str(reason).lower().replace('_', ' ')}") from None


def cert_names(path: str) -> tuple[str, ...]:
    """DNS names of a PEM certificate file (subjectAltName, else its common name)."""
    try:
        from mso.spec.certs import names_in_file  # the proxy needs it only for TLS listeners
    except ImportError:
        return ()  # no x509 parser: every client gets the default certificate
    return names_in_file(path)


def pick(names: dict[str, ssl.SSLContext], server_name: str | None) -> ssl.SSLContext | None:
    """The context for `server_name`: exact name, then a wildcard of its parent; None:
    the default."""
    if not server_name:
        return None
    name = server_name.lower().rstrip(".")
    found = names.get(name)
    if found is None and "." in name:
        found = names.get("*." + name.split(".", 1)[1])
    return found


class ServerTls:
    """The listening context (settings only, no certificate) and the certificates'
    contexts; every handshake is switched to one of these by `_on_sni` (OpenSSL calls it
    for clients without SNI too, with None)."""

    def __init__(self, spec: TlsSpec, where: str) -> None:
        self.context = new_context()
        self.context.sni_callback = self._on_sni
        self.spec = spec
        self.default, self.by_name = _load_all(spec, where)

    def stage(self, spec: TlsSpec, where: str) -> Staged | None:
        """Read the certificates of `spec` (TableError if one cannot serve); None when
        nothing changed. Nothing changes for clients until `commit`."""
        if spec == self.spec:
            return None
        default, by_name = _load_all(spec, where)
        return Staged(spec, default, by_name)

    def commit(self, staged: Staged | None) -> None:
        """From the next handshake on, serve the staged certificates."""
        if staged is not None:
            self.spec, self.default, self.by_name = staged.spec, staged.default, staged.by_name

    def _on_sni(self, obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                _ctx: ssl.SSLContext) -> int | None:
        obj.context = pick(self.by_name, server_name) or self.default
        return None


class Staged:
    def __init__(self, spec: TlsSpec, default: ssl.SSLContext,
                 by_name: dict[str, ssl.SSLContext]) -> None:
        self.spec, self.default, self.by_name = spec, default, by_name


def _load_all(spec: TlsSpec, where: str) -> tuple[ssl.SSLContext, dict[str, ssl.SSLContext]]:
    contexts = []
    for i, cert in enumerate(spec.certs):
        ctx = new_context()
        _load_chain(ctx, cert, f"{where}.certificates[{i}]")
        contexts.append((cert, ctx))
    by_name: dict[str, ssl.SSLContext] = {}
    for cert, ctx in contexts:
        for name in cert.names or cert_names(cert.cert):
            by_name.setdefault(name, ctx)  # the first listed wins a shared name
    return contexts[0][1], by_name
