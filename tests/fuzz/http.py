"""HTTP request fuzzing of mso's proxy: generated requests, a recording upstream, the oracle.

A case is one client connection carrying 1-3 pipelined requests, generated as parts
(method, target, version, headers, body framing, chunk sizes and extensions) and then
perhaps mutated in one of the ways request smuggling and parser differentials are made
of (duplicated or malformed Content-Length/Transfer-Encoding, obs-fold, odd bytes in
names and values, bare LF, bad chunk sizes, long targets and heads, unknown versions,
upgrades followed by bytes that read as a request). Every mutation says what the proxy
must do with the request: forward it, refuse it with one of a set of statuses, or
either (where RFC 9112 lets a recipient choose).

`RecordingUpstream` is a real HTTP/1.1 server (h11, which is strict) recording every
request it parses, answering each with its sequence number, method, target and body
digest. `run_case` sends the bytes over a real socket to a real proxy process and checks:

* every request before the first refused one is answered by the upstream, in order,
  with the method, target and body the client sent;
* a refused request gets its 4xx/5xx (with `connection: close`) and the connection closes;
* the upstream parsed exactly the requests whose answers the client got (one more is a
  smuggled request), never a message it could not parse, and no upstream connection is
  left holding the start of another message;
* the proxy is alive afterwards and still answers a plain request.
"""
from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import h11
from hypothesis import strategies as st

OK = "ok"  # forwarded, answered by the upstream
EITHER = "either"  # forwarded, or refused with a 4xx/5xx and closed


class FuzzFailure(AssertionError):
    """The proxy did something the oracle forbids."""


# --- the recording upstream ---------------------------------------------------------------


@dataclass
class Seen:
    id: int
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class RecordingUpstream:
    """A threaded HTTP/1.1 server that records what it parses, per connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        self.pending: dict[int, bytes] = {}  # connection -> bytes of an unfinished message
        self.open = 0
        self.answered = 0  # 200s the client side got: the upstream must have parsed as many
        self.name = "recorder"
        self.last_case = ""
        self._next_conn = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self._next_conn += 1
                self.open += 1
                n = self._next_conn
            threading.Thread(target=self._serve, args=(c, n), daemon=True).start()

    def _serve(self, c: socket.socket, n: int) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        req: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    with self.lock:
                        data, _ = conn.trailing_data
                        if data:
                            self.pending[n] = bytes(data)
                        else:
                            self.pending.pop(n, None)
                    chunk = c.recv(65536)
                    conn.receive_data(chunk)
                    if not chunk and not conn.trailing_data[0] and req is None:
                        return
                    continue
                if isinstance(event, h11.Request):
                    req, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert req is not None
                    with self.lock:
                        seen = Seen(len(self.seen) + 1, req.method, req.target,
                                    list(req.headers), bytes(body))
                        self.seen.append(seen)
                    answer = json.dumps({
                        "id": seen.id, "method": req.method.decode("latin-1"),
                        "target": req.target.decode("latin-1"), "len": len(body),
                        "sha": hashlib.sha256(body).hexdigest()}).encode()
                    out = conn.send(h11.Response(status_code=200, headers=[
                        ("content-type", "application/json"),
                        ("content-length", str(len(answer)))]))
                    if req.method != b"HEAD":
                        out = (out or b"") + (conn.send(h11.Data(data=answer)) or b"")
                    out = (out or b"") + (conn.send(h11.EndOfMessage()) or b"")
                    c.sendall(out)
                    req = None
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, (h11.ConnectionClosed, h11.PAUSED)):
                    return
        except h11.RemoteProtocolError as exc:
            with self.lock:
                self.errors.append(f"upstream could not parse what the proxy sent: {exc}")
        except (OSError, h11.LocalProtocolError):
            pass
        finally:
            with self.lock:
                self.open -= 1
                # A connection that ends in the middle of a message is fine (the proxy
                # gave up on that request); only bytes left on a *live* one count.
                self.pending.pop(n, None)
            c.close()

    def snapshot(self) -> int:
        with self.lock:
            return len(self.seen)

    def since(self, mark: int) -> list[Seen]:
        with self.lock:
            return self.seen[mark:]


# --- request generation --------------------------------------------------------------------

TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
NAME = st.text(TCHAR, min_size=1, max_size=12).filter(
    lambda n: n.lower() not in {"host", "content-length", "transfer-encoding", "connection",
                                "upgrade", "te", "trailer", "keep-alive", "proxy-connection",
                                "expect", "x-mso-route", "cookie", "traceparent"})
# field-value: visible ASCII, obs-text, and inner spaces/tabs
VALUE = st.binary(max_size=30).map(
    lambda b: bytes(c for c in b if c == 0x20 or c == 0x09 or 0x21 <= c <= 0x7E or c >= 0x80)
    .strip(b" \t"))
SEGMENT = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:@", max_size=8)


@dataclass
class Request:
    method: bytes
    target: bytes
    version: bytes = b"HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    framing: str = "none"  # none | length | chunked
    chunks: list[int] = field(default_factory=list)  # chunk sizes for 'chunked'
    ext: bytes = b""  # a chunk extension on every chunk
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    expect: Any = OK  # OK, EITHER, or a frozenset of statuses
    mutation: str = ""
    raw: bytes | None = None  # set by mutations that rewrite the bytes themselves
    tail: bytes = b""  # bytes after the message that are not a request of the client's
    last: bool = False  # nothing may be pipelined after it (close, HTTP/1.0, upgrade)

    def head(self) -> bytes:
        lines = [b"%s %s %s" % (self.method, self.target, self.version)]
        lines += [n + b": " + v for n, v in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def encoded_body(self) -> bytes:
        if self.framing != "chunked":
            return self.body
        out, i = [], 0
        for n in self.chunks:
            piece = self.body[i:i + n]
            i += n
            out.append(b"%x%s\r\n%s\r\n" % (len(piece), self.ext, piece))
        trailer = b"".join(n + b": " + v + b"\r\n" for n, v in self.trailers)
        return b"".join(out) + b"0" + self.ext + b"\r\n" + trailer + b"\r\n"

    def wire(self) -> bytes:
        if self.raw is not None:
            return self.raw + self.tail
        return self.head() + self.encoded_body() + self.tail

    def describe(self) -> str:
        return f"{self.mutation or 'plain'} {self.method!r} {self.target[:60]!r} {self.framing}"


@st.composite
def plain_request(draw: st.DrawFn) -> Request:
    """A well-formed request that the proxy must forward unchanged in meaning."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS",
                                   b"HEAD", b"GET", b"POST"]))
    path = b"/" + "/".join(draw(st.lists(SEGMENT, max_size=4))).encode()
    if draw(st.booleans()):
        path += b"?" + draw(SEGMENT).encode() + b"=" + draw(SEGMENT).encode()
    version = draw(st.sampled_from([b"HTTP/1.1"] * 5 + [b"HTTP/1.0"]))
    headers = [(b"Host", draw(st.sampled_from([b"x", b"example.com", b"x:8080", b"[::1]:1"])))]
    if version == b"HTTP/1.0":
        headers.append((b"Connection", b"keep-alive"))
    for _ in range(draw(st.integers(0, 4))):
        headers.append((draw(NAME).encode(), draw(VALUE)))
    req = Request(method, path, version, headers)
    if method in (b"POST", b"PUT", b"PATCH") or draw(st.integers(0, 5)) == 0:
        req.body = draw(st.binary(max_size=300))
        chunked = version == b"HTTP/1.1" and draw(st.booleans())
        if chunked:
            req.framing = "chunked"
            sizes, left = [], len(req.body)
            while left > 0:
                n = min(left, draw(st.integers(1, 120)))
                sizes.append(n)
                left -= n
            req.chunks = sizes
            req.headers.append((b"Transfer-Encoding", draw(st.sampled_from(
                [b"chunked", b"Chunked", b" chunked", b"chunked "]))))
            if draw(st.integers(0, 3)) == 0:
                req.ext = draw(st.sampled_from([b";a=b", b";a", b';a="q s"', b" ;a=1"[1:]]))
            if draw(st.integers(0, 3)) == 0:
                req.trailers = [(draw(NAME).encode(), draw(VALUE))]
        else:
            req.framing = "length"
            req.headers.append((b"Content-Length", str(len(req.body)).encode()))
        pos = draw(st.integers(1, len(req.headers)))  # Host need not be first
        req.headers.insert(pos, req.headers.pop())
    return req


def _set(*statuses: int) -> frozenset[int]:
    return frozenset(statuses)


BAD = _set(400)


def _mutate(draw: st.DrawFn, req: Request) -> Request:
    """One mutation, with what the proxy must then do (`req.expect`)."""
    op = draw(st.sampled_from(MUTATIONS))
    req.mutation = op
    h = req.headers
    if op == "cl_and_te":
        body = req.body or b"abc"
        req.body, req.framing, req.chunks = body, "chunked", [len(body)]
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        pair = [(b"Content-Length", str(len(body)).encode()), (b"Transfer-Encoding", b"chunked")]
        if draw(st.booleans()):
            pair.reverse()
        h += pair
        req.expect = BAD
    elif op == "two_cl_differ":
        n = len(req.body)
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        req.framing, req.chunks = "length", []
        h += [(b"Content-Length", str(n).encode()), (b"content-length", str(n + 1).encode())]
        req.expect = BAD
    elif op == "two_cl_same":
        if req.framing != "length":
            h[:] = [x for x in h if x[0].lower() != b"transfer-encoding"]
            req.framing, req.chunks = "length", []
            h.append((b"Content-Length", str(len(req.body)).encode()))
        h.append((b"Content-Length", str(len(req.body)).encode()))
        req.expect = EITHER
    elif op == "cl_odd":
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        req.framing, req.chunks = "length", []
        n = len(req.body)
        value = draw(st.sampled_from([b"+%d", b"-%d", b"%d, %d", b"0x%x", b"%d.0", b"%de0",
                                      b"%d\x00", b"1%d" + b"0" * 30, b"%d\x0b", b"", b" "]))
        h.append((b"Content-Length", value.replace(b"%d, %d", b"%d, %d" % (n, n))
                  .replace(b"%d", b"%d" % n).replace(b"%x", b"%x" % n)))
        req.expect = _set(400, 413)
    elif op == "te_odd":
        body = req.body or b"abc"
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        req.body, req.framing, req.chunks = body, "chunked", [len(body)]
        value, req.expect = draw(st.sampled_from([
            (b"xchunked", BAD), (b"chunked, chunked", BAD), (b"chunked, gzip", BAD),
            (b'"chunked"', BAD), (b"\x0bchunked", BAD), (b"chunked\x00", BAD),
            (b"chunk", BAD), (b"gzip, chunked", _set(501)), (b"identity", _set(400, 501)),
            (b"", BAD), (b"chunked;q=1", BAD), (b"\xc2\xa0chunked", BAD),
        ]))
        h.append((b"Transfer-Encoding", value))
    elif op == "te_twice":
        body = req.body or b"abc"
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        req.body, req.framing, req.chunks = body, "chunked", [len(body)]
        h += [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", draw(st.sampled_from(
            [b"chunked", b"identity", b"gzip"])))]
        req.expect = _set(400, 501)
    elif op == "te_http10":
        body = req.body or b"abc"
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        req.version, req.body, req.framing, req.chunks = b"HTTP/1.0", body, "chunked", [len(body)]
        h.append((b"Transfer-Encoding", b"chunked"))
        req.expect, req.last = EITHER, True
    elif op == "chunk_size":
        body = req.body or b"abcdef"
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        h.append((b"Transfer-Encoding", b"chunked"))
        req.body, req.framing = body, "chunked"
        bad, req.expect = draw(st.sampled_from([
            (b"0x%x", BAD), (b"%x ", EITHER), (b" %x", BAD), (b"+%x", BAD), (b"-%x", BAD),
            (b"%x\x00", BAD), (b"0000000000000000000%x", EITHER), (b"ffffffffffffffffff", BAD),
            (b"%X", OK), (b"00%x", OK), (b"%x;", BAD), (b"%x;a=\x00", BAD), (b"%x\n", BAD),
        ]))
        size = bad.replace(b"%x", b"%x" % len(body)).replace(b"%X", b"%X" % len(body))
        end = b"" if size.endswith(b"\n") else b"\r\n"
        req.raw = req.head() + size + end + body + b"\r\n0\r\n\r\n"
    elif op == "chunk_data_len":
        body = req.body or b"abcdef"
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        h.append((b"Transfer-Encoding", b"chunked"))
        req.body, req.framing = body, "chunked"
        # the size says fewer bytes than follow (the rest reads as a next chunk-size line)
        req.raw = req.head() + b"%x\r\n" % (len(body) - 1 if len(body) > 1 else 0) + body + \
            b"\r\n0\r\n\r\n"
        req.expect = BAD if len(body) > 1 else BAD
    elif op == "chunk_bare_lf":
        body = req.body or b"abc"
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        h.append((b"Transfer-Encoding", b"chunked"))
        req.body, req.framing = body, "chunked"
        req.raw = req.head() + draw(st.sampled_from([
            b"%x\n%s\r\n0\r\n\r\n", b"%x\r\n%s\n0\r\n\r\n", b"%x\r\n%s\r\n0\n\n",
            b"%x\r\n%s\r\n0\r\n\n", b"%x\r%s\r\n0\r\n\r\n"])).replace(b"%x", b"%x" % len(body)) \
            .replace(b"%s", body)
        req.expect = BAD
    elif op == "obs_fold":
        h.insert(draw(st.integers(0, len(h))), (b"X-Fold", b"a\r\n " + draw(st.sampled_from(
            [b"b", b"Transfer-Encoding: chunked", b"\tc"]))))
        req.expect = BAD
    elif op == "name_odd":
        bad = draw(st.sampled_from([b"X A", b"X\x00A", b"X\x7fA", b"X(A)", b"X\x80A", b"X\tA",
                                    b"X-A ", b" X-A", b"X\"A", b"", b"X{A}", b"\xffX"]))
        h.insert(draw(st.integers(1, len(h))), (bad, b"v"))
        req.expect = BAD
    elif op == "value_odd":
        bad, req.expect = draw(st.sampled_from([
            (b"a\x00b", BAD), (b"a\rb", BAD), (b"a\nb", BAD), (b"a\x7fb", EITHER),
            (b"a\x01b", EITHER), (b"\xff\xfe", OK), (b"a\tb", OK), (b"\x0b", EITHER),
        ]))
        h.insert(draw(st.integers(1, len(h))), (b"X-Odd", bad))
    elif op == "space_before_colon":
        name = draw(st.sampled_from([b"Host", b"Transfer-Encoding", b"Content-Length", b"X-A"]))
        req.raw = req.head()[:-2] + name + b" : v\r\n\r\n" + req.encoded_body()
        req.expect = BAD
    elif op == "bare_lf_head":
        head = req.head()
        n = head.count(b"\r\n")
        k = draw(st.integers(0, max(0, n - 2)))
        parts = head.split(b"\r\n")
        parts[k] = parts[k] + b"\n" + parts[k + 1]
        del parts[k + 1]
        req.raw = b"\r\n".join(parts) + req.encoded_body()
        req.expect = BAD
    elif op == "host":
        h[:] = [x for x in h if x[0].lower() != b"host"]
        variant = draw(st.sampled_from(["none", "two", "two_same"]))
        if variant == "two":
            h += [(b"Host", b"a"), (b"host", b"b")]
        elif variant == "two_same":
            h += [(b"Host", b"a"), (b"Host", b"a")]
        req.expect = BAD if req.version == b"HTTP/1.1" or variant != "none" else OK
    elif op == "method":
        req.method, req.expect = draw(st.sampled_from([
            (b"get", BAD), (b"G@T", BAD), (b"GE T", BAD), (b"FOO", EITHER), (b"CONNECT", _set(405, 400)),
            (b"TRACE", EITHER), (b"PROPFIND", EITHER), (b"\x00GET", BAD), (b"", BAD),
        ]))
        if req.method == b"CONNECT":
            req.target = b"x:443"
    elif op == "target":
        req.target, req.expect = draw(st.sampled_from([
            (b"/a b", BAD), (b"/a\x00", BAD), (b"/a\x7f", EITHER), (b"/\xc3\xa9", EITHER),
            (b"*", EITHER), (b"http://x/a", EITHER), (b"a", EITHER), (b"/a#f", EITHER),
            (b"/" + b"a" * 9000, _set(414)), (b"//x", OK), (b"/..%2f", OK), (b"", BAD),
            (b"/a\tb", BAD),
        ]))
    elif op == "version":
        req.version, req.expect = draw(st.sampled_from([
            (b"HTTP/1.2", _set(505, 400)), (b"HTTP/2.0", _set(505, 400)), (b"HTTP/0.9", _set(505, 400)),
            (b"HTTP/1.1 ", BAD), (b"http/1.1", BAD), (b"HTTP/11", BAD), (b"HTTP/1.1x", BAD),
            (b"HTTP/3.0", _set(505, 400)), (b"", BAD),
        ]))
    elif op == "too_many":
        h += [(b"X-%d" % i, b"v") for i in range(draw(st.sampled_from([101, 150])))]
        req.expect = _set(431)
    elif op == "too_big":
        h.append((b"X-Big", b"a" * draw(st.sampled_from([70000, 200000]))))
        req.expect = _set(431)
    elif op == "leading_ws_line":
        req.raw = req.head()[:-2] + draw(st.sampled_from([b" X-A: v", b"\tX-A: v"])) + \
            b"\r\n\r\n" + req.encoded_body()
        req.expect = BAD
    elif op == "upgrade_then_request":
        # An upgrade the upstream declines, followed by bytes that read as a request: they
        # belong to the tunnel that never opened and must never reach the upstream as HTTP.
        req.method, req.framing, req.body, req.chunks = b"GET", "none", b"", []
        h[:] = [x for x in h if x[0].lower() not in (b"content-length", b"transfer-encoding")]
        h += [(b"Upgrade", draw(st.sampled_from([b"websocket", b"h2c", b"foo"]))),
              (b"Connection", b"Upgrade")]
        req.tail = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        req.expect, req.last = EITHER, True
    elif op == "connection_close":
        h.append((b"Connection", draw(st.sampled_from([b"close", b"Close", b"keep-alive, close"]))))
        req.last = True
    return req


MUTATIONS = [
    "cl_and_te", "two_cl_differ", "two_cl_same", "cl_odd", "te_odd", "te_twice", "te_http10",
    "chunk_size", "chunk_data_len", "chunk_bare_lf", "obs_fold", "name_odd", "value_odd",
    "space_before_colon", "bare_lf_head", "host", "method", "target", "version", "too_many",
    "too_big", "leading_ws_line", "upgrade_then_request", "connection_close",
]


@st.composite
def request(draw: st.DrawFn) -> Request:
    req = draw(plain_request())
    if draw(st.integers(0, 2)) > 0:
        req = _mutate(draw, req)
    if req.version == b"HTTP/1.0" and (b"Connection", b"keep-alive") not in req.headers:
        req.last = True
    return req


@st.composite
def pipelines(draw: st.DrawFn) -> list[Request]:
    """1-3 requests for one connection; nothing follows a request that ends it."""
    out: list[Request] = []
    for _ in range(draw(st.integers(1, 3))):
        req = draw(request())
        out.append(req)
        if req.last or req.expect != OK:
            break
    return out


# --- the oracle ------------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def _read_responses(sock: socket.socket, count: int, methods: list[bytes], timeout: float
                    ) -> tuple[list[Response], bool, bytes]:
    """Read up to `count` responses; returns them, whether the proxy closed, and leftovers."""
    buf = b""
    out: list[Response] = []
    closed = False
    deadline = time.monotonic() + timeout

    def fill() -> bool:
        nonlocal buf, closed
        left = deadline - time.monotonic()
        if left <= 0 or closed:
            return False
        sock.settimeout(left)
        try:
            piece = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            piece = b""
        if not piece:
            closed = True
            return False
        buf += piece
        return True

    while len(out) < count:
        while b"\r\n\r\n" not in buf:
            if not fill():
                return out, closed, buf
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0][9:12])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower()] = v.strip()
        if status < 200:
            continue  # interim
        is_head = len(out) < len(methods) and methods[len(out)] == b"HEAD" and status == 200
        n = 0 if is_head or status in (204, 304) else int(headers.get(b"content-length", b"0"))
        if headers.get(b"transfer-encoding"):
            raise FuzzFailure(f"unexpected chunked response: {head!r}")
        while len(buf) < n:
            if not fill():
                raise FuzzFailure(f"response body cut short: {head!r} {buf[:200]!r}")
        out.append(Response(status, headers, buf[:n]))
        buf = buf[n:]
    # all expected answers read: is the connection closed (if it should be)?
    return out, closed, buf


def run_case(port: int, upstream: RecordingUpstream, reqs: list[Request], timeout: float = 10.0
             ) -> str:
    """Send one connection's requests; raise FuzzFailure on any broken rule; return a
    one-word outcome for statistics ('forwarded', 'refused NNN')."""
    mark = upstream.snapshot()
    if mark != upstream.answered:
        before, upstream.answered = upstream.answered, mark
        raise FuzzFailure(f"smuggled by the previous case ({upstream.last_case}): the upstream "
                          f"parsed {mark} requests, the clients got {before} answers: "
                          f"{[(s.method, s.target) for s in upstream.seen[before:mark]]}")
    upstream.last_case = " | ".join(r.describe() for r in reqs)
    wire = b"".join(r.wire() for r in reqs)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            s.sendall(wire)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before it read everything: the responses tell
        responses, closed, extra = _read_responses(s, len(reqs), [r.method for r in reqs], timeout)
        last_refused = bool(responses) and responses[-1].status != 200
        if reqs[-1].last or last_refused:
            # the proxy must close now: nothing more may come
            more, closed2, extra2 = _read_responses(s, 1, [], min(timeout, 3.0))
            where = " | ".join(r.describe() for r in reqs)
            if more or extra2:
                _resync(upstream)
                raise FuzzFailure(f"{where}: answer after the last one: {more} {extra2[:200]!r}")
            closed = closed2 or closed
            if not closed:
                _resync(upstream)
                raise FuzzFailure(f"{where}: connection left open after a refused or final "
                                  f"request ({[r.status for r in responses]})")
    try:
        outcome = _judge(reqs, responses, extra, upstream, mark)
    except FuzzFailure:
        _resync(upstream)
        raise
    _settle(upstream, mark, responses)
    return outcome


def _resync(upstream: RecordingUpstream) -> None:
    """After a failure, start the next case's accounting afresh (so it is not blamed)."""
    deadline = time.monotonic() + 1.0
    while upstream.pending and time.monotonic() < deadline:
        time.sleep(0.005)
    upstream.answered = upstream.snapshot()


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _judge(reqs: list[Request], responses: list[Response], extra: bytes,
           upstream: RecordingUpstream, mark: int) -> str:
    where = " | ".join(r.describe() for r in reqs)
    if extra:
        raise FuzzFailure(f"{where}: bytes after the responses: {extra[:200]!r}")
    outcome = "forwarded"
    for i, req in enumerate(reqs):
        if i >= len(responses):
            raise FuzzFailure(f"{where}: request {i} ({req.describe()}) got no answer")
        resp = responses[i]
        echo = _json(resp.body) if req.method != b"HEAD" else {"head": True}
        forwarded = resp.status == 200 and bool(echo)
        if req.expect == OK and not forwarded:
            raise FuzzFailure(f"{where}: request {i} must be forwarded, got {resp.status} "
                              f"{resp.body[:100]!r}")
        if isinstance(req.expect, frozenset) and resp.status not in req.expect:
            raise FuzzFailure(f"{where}: request {i} must be refused with {sorted(req.expect)}, "
                              f"got {resp.status} {resp.body[:100]!r}")
        if not forwarded:
            if not 400 <= resp.status < 600:
                raise FuzzFailure(f"{where}: request {i} refused with {resp.status}")
            if resp.headers.get(b"connection", b"").lower() != b"close":
                raise FuzzFailure(f"{where}: a refusal without connection: close")
            if len(responses) > i + 1:
                raise FuzzFailure(f"{where}: answers after a refusal")
            outcome = f"refused {resp.status}"
            break
        if req.method != b"HEAD":
            body = req.body
            want = {"method": req.method.decode("latin-1"), "len": len(body),
                    "sha": hashlib.sha256(body).hexdigest()}
            got = {k: echo.get(k) for k in want}
            if got != want and req.raw is None:
                raise FuzzFailure(f"{where}: request {i} reached the upstream as {echo}, "
                                  f"sent {want}")
            if req.raw is None and echo.get("target", "").encode("latin-1") != req.target:
                raise FuzzFailure(f"{where}: target changed: {echo.get('target')!r}")
    return outcome


def _settle(upstream: RecordingUpstream, mark: int, responses: list[Response]) -> None:
    """The upstream saw exactly the requests the client got answers for (no smuggled one),
    could parse all of them, and holds no unfinished message on a live connection."""
    answered = sum(1 for r in responses if r.status == 200)
    upstream.answered += answered
    deadline = time.monotonic() + 2.0
    while True:
        seen = upstream.since(mark)
        with upstream.lock:
            errors, pending = list(upstream.errors), dict(upstream.pending)
        if errors:
            upstream.errors.clear()
            raise FuzzFailure(errors[0])
        if len(seen) > answered:
            upstream.answered = mark + len(seen)
            raise FuzzFailure(f"smuggled: the upstream parsed {len(seen)} requests, the client "
                              f"got {answered} answers: {[(s.method, s.target) for s in seen]}")
        if not pending:
            return
        if time.monotonic() > deadline:
            raise FuzzFailure(f"an upstream connection holds the start of another message: "
                              f"{list(pending.values())[0][:200]!r}")
        time.sleep(0.005)


def probe(port: int, upstream: RecordingUpstream) -> None:
    """The proxy is alive and answers a plain request."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        responses, _, _ = _read_responses(s, 1, [b"GET"], 10)
    if responses and responses[0].status == 200:
        upstream.answered += 1
    if not responses or responses[0].status != 200:
        raise FuzzFailure(f"the proxy no longer answers a plain request: {responses}")
