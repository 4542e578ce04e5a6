"""Rewrite of an upstream response head for the client (pure, memoised).

Works on the raw head exactly as llhttp validated it, with one regex pass (C
speed) instead of a Python callback and loop iteration per header: only the
framing and hop-by-hop header lines are looked at; every other line is copied
byte for byte.  Upstreams repeat identical heads (same Date within a second),
so results are memoised.
"""
from __future__ import annotations

from typing import Final

import re

from .safety import connection_tokens, content_length_ok, transfer_encoding_status

# Framing and hop-by-hop header lines; each is preceded by CRLF in the block.
_SPECIAL: Final = re.compile(
    rb"\r\n(connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade"
    rb"|content-length)[ \t]*:([^\r\n]*)",
    re.IGNORECASE,
)
_CONN_KEEP: Final = (b"close", b"keep-alive", b"upgrade")

# (head for the client, re-chunk body, body ends at upstream EOF, client keep-alive)
Plan = tuple[bytes, bool, bool, bool]
_CACHE: Final[dict[tuple[bytes, bool, bool, bool, bool], Plan]] = {}
_CACHE_MAX: Final = 2048


def fix_version(head: bytes) -> bytes:
    """We speak HTTP/1.1 to clients whatever version the upstream used."""
    return head if head.startswith(b"HTTP/1.1 ") else b"HTTP/1.1" + head[8:]


def _drop_headers(block: bytes, names: list[bytes]) -> bytes:
    """Remove header lines named in a Connection header (RFC 9110 §7.6.1)."""
    alt = b"|".join(re.escape(n) for n in names)
    return re.sub(rb"\r\n(?:" + alt + rb")[ \t]*:[^\r\n]*", b"", block, flags=re.IGNORECASE)


def rewrite(
    raw: bytes, status: int, is_head: bool, http11: bool, keep_alive: bool, upgrade: bool
) -> Plan | None:
    """Plan the client response head; None if the upstream framing is ambiguous.

    `is_head`: the request was HEAD; `http11`: the client speaks HTTP/1.1;
    `keep_alive`: the client connection may stay open; `upgrade`: the request
    asked for a protocol upgrade.
    """
    key = (raw, is_head, http11, keep_alive, upgrade)
    plan = _CACHE.get(key)
    if plan is None:
        plan = _rewrite(raw, status, is_head, http11, keep_alive, upgrade)
        if plan is not None:
            if len(_CACHE) >= _CACHE_MAX:
                _CACHE.clear()
            _CACHE[key] = plan
    return plan


def _framing(
    special: list[tuple[bytes, bytes]], status: int
) -> tuple[bytes | None, bool, list[bytes], bytes] | None:
    """Content-Length, chunked?, Connection-named headers, Upgrade value; None if ambiguous."""
    cl: bytes | None = None
    te = False
    drop: list[bytes] = []
    upgrade_value = b""
    for name, value in special:
        n = name.lower()
        if n == b"content-length":
            value = value.strip()
            if not content_length_ok(value) or (cl is not None and cl != value):
                return None
            cl = value
        elif n == b"transfer-encoding":
            if te or transfer_encoding_status(value):
                return None
            te = True
        elif n == b"connection":
            if value.strip().lower() not in _CONN_KEEP:
                drop += [t for t in connection_tokens(value) if t not in _CONN_KEEP]
        elif n == b"upgrade" and status == 101:
            upgrade_value = value.strip()
    if te and cl is not None:
        return None
    return cl, te, drop, upgrade_value


def _rewrite(
    raw: bytes, status: int, is_head: bool, http11: bool, keep_alive: bool, upgrade: bool
) -> Plan | None:
    line_end = raw.find(b"\r\n")
    block = raw[line_end:-4]
    special = _SPECIAL.findall(block)
    framing = _framing(special, status)
    if framing is None:
        return None
    cl, te, drop, upgrade_value = framing
    if special:
        block = _SPECIAL.sub(b"", block)
    if drop:
        block = _drop_headers(block, drop)
    out = [fix_version(raw[:line_end]), block]
    chunked = eof_body = False
    if status == 101:
        out.append(b"\r\nupgrade: " + upgrade_value + b"\r\nconnection: upgrade")
    elif is_head or status == 204 or status == 304:
        if cl is not None and status != 204:
            out.append(b"\r\ncontent-length: " + cl)
    elif cl is not None:
        out.append(b"\r\ncontent-length: " + cl)
    else:
        eof_body = not te
        if http11:
            out.append(b"\r\ntransfer-encoding: chunked")
            chunked = True
        else:
            keep_alive = False  # HTTP/1.0 client: the body ends when we close
    if upgrade and status != 101:
        keep_alive = False  # the client may already be sending the new protocol
    if not keep_alive:
        out.append(b"\r\nconnection: close")
    elif not http11:
        out.append(b"\r\nconnection: keep-alive")
    out.append(b"\r\n\r\n")
    return b"".join(out), chunked, eof_body, keep_alive
