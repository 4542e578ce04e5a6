"""RFC 9112 request/response framing checks and canned error responses.

llhttp (via httptools) already rejects most malformed messages; these checks
cover what it is lenient about or what needs a specific status code
(501 for unknown transfer-codings, 431/414 for size limits, 505 for versions).
"""
from __future__ import annotations

from typing import Final

MAX_URL: Final = 8192
MAX_HEADER_BYTES: Final = 65536
MAX_HEADERS: Final = 100
MAX_REPLAY_BODY: Final = 65536

_REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 204: "No Content",
    304: "Not Modified", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    414: "URI Too Long", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}

# Hop-by-hop request headers that are never forwarded as-is.
HOP_BY_HOP: Final = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
})
_TOKEN_CHARS: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
KNOWN_CODINGS = frozenset({b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress", b"br"})


def reason(status: int) -> str:
    return _REASONS.get(status, "Unknown")


def _build_error(status: int) -> bytes:
    body = f"{status} {reason(status)}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason(status)}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


_ERRORS: Final = {s: _build_error(s) for s in _REASONS if s >= 400}


def unavailable_response(service: str, why: str) -> bytes:
    """A 503 that says which service has no ready replica and why (the control plane's
    words), so the person at the gateway is not left with a bare status line."""
    text = why.replace("\r", " ").replace("\n", " ")
    body = f"503 Service Unavailable: {service}: {text}\n".encode("utf-8", "replace")
    return (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    ).encode() + body


def error_response(status: int) -> bytes:
    """A complete `Connection: close` error response."""
    resp = _ERRORS.get(status)
    return resp if resp is not None else _build_error(status)


def transfer_encoding_status(value: bytes) -> int:
    """0 if the transfer-coding list is exactly `chunked`, else the status to reject with.

    Anything that is not a clean token list is treated as obfuscation (400);
    a well-formed list with codings we do not implement gets 501 (RFC 9112 §6.1).
    """
    tokens = [t.strip(b" \t").lower() for t in value.split(b",")]
    for t in tokens:
        if not t or any(c not in _TOKEN_CHARS for c in t):
            return 400
    if tokens == [b"chunked"]:
        return 0
    if tokens[-1] != b"chunked" or tokens.count(b"chunked") > 1:
        # chunked must be the final coding, exactly once; otherwise framing is ambiguous.
        return 400
    return 501


def content_length_ok(value: bytes) -> bool:
    v = value.strip(b" \t")
    return 0 < len(v) <= 18 and v.isdigit()


def connection_tokens(value: bytes) -> list[bytes]:
    return [t.strip(b" \t").lower() for t in value.split(b",") if t.strip(b" \t")]


def response_framing_error(headers: list[tuple[bytes, bytes]]) -> bool:
    """True if an upstream response's framing is ambiguous and must not be forwarded."""
    cl: bytes | None = None
    te = False
    for name, value in headers:
        n = name.lower()
        if n == b"content-length":
            if not content_length_ok(value) or (cl is not None and cl != value.strip()):
                return True
            cl = value.strip()
        elif n == b"transfer-encoding":
            if te or transfer_encoding_status(value) != 0:
                return True
            te = True
    return te and cl is not None


def valid_header_value(value: bytes) -> bool:
    return b"\x00" not in value and b"\r" not in value and b"\n" not in value
