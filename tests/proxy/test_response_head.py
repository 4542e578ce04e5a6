"""Pure response-head rewrite: hop-by-hop stripping, re-framing, ambiguity detection."""
from __future__ import annotations

from mso.proxy.response_head import rewrite

CL = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
EOF_BODY = b"HTTP/1.0 200 OK\r\nX-A: 1\r\n\r\n"


def test_content_length_response_keeps_length_and_drops_hop_by_hop() -> None:
    plan = rewrite(CL, 200, False, True, True, False)
    assert plan is not None
    head, chunked, eof, keep = plan
    assert head == b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 5\r\n\r\n"
    assert (chunked, eof, keep) == (False, False, True)


def test_chunked_response_is_rechunked_for_http11_and_closed_for_http10() -> None:
    head, chunked, eof, keep = rewrite(CHUNKED, 200, False, True, True, False)  # type: ignore[misc]
    assert b"transfer-encoding: chunked" in head and chunked and not eof and keep
    head, chunked, eof, keep = rewrite(CHUNKED, 200, False, False, True, False)  # type: ignore[misc]
    assert b"chunked" not in head.lower() and not chunked and not keep
    assert head.endswith(b"connection: close\r\n\r\n")


def test_eof_delimited_body_and_version_rewrite() -> None:
    head, chunked, eof, keep = rewrite(EOF_BODY, 200, False, True, True, False)  # type: ignore[misc]
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and chunked and eof and keep


def test_head_and_304_keep_content_length_but_204_does_not() -> None:
    assert b"content-length: 5" in rewrite(CL, 200, True, True, True, False)[0]  # type: ignore[index]
    raw204 = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
    assert b"content-length" not in rewrite(raw204, 204, False, True, True, False)[0]  # type: ignore[index]


def test_headers_named_in_connection_are_removed() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: X-Secret\r\nX-Secret: 1\r\nX-Other: 2\r\nContent-Length: 0\r\n\r\n"
    head = rewrite(raw, 200, False, True, True, False)[0]  # type: ignore[index]
    assert b"X-Secret" not in head and b"X-Other: 2" in head


def test_ambiguous_framing_is_refused() -> None:
    both = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    two_cl = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
    bad_te = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
    assert rewrite(both, 200, False, True, True, False) is None
    assert rewrite(two_cl, 200, False, True, True, False) is None
    assert rewrite(bad_te, 200, False, True, True, False) is None


def test_upgrade_response_keeps_upgrade_headers() -> None:
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    head = rewrite(raw, 101, False, True, True, True)[0]  # type: ignore[index]
    assert head == (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                    b"connection: upgrade\r\n\r\n")
