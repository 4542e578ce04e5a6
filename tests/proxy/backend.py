"""Test backend: a small HTTP/1.1 server (asyncio + httptools) run as its own process.

`python tests/proxy/backend.py NAME [PORT]` prints its port on stdout, then serves:
  /echo, anything else  JSON: backend name, method, path, headers, body length + sha256
  /bytes/N[?chunked]    N bytes of b"x" (Content-Length, or chunked with ?chunked)
  /status/N             an empty response with status N
  /slow/MS              answers after MS milliseconds
  /eof/N                N bytes, body delimited by closing the connection
  /ws                   101 Switching Protocols, then echoes every byte back
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import sys

import httptools

NAME = sys.argv[1] if len(sys.argv) > 1 else "backend"
CHUNK = b"x" * 65536


class Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.can_write = asyncio.Event()
        self.can_write.set()
        self.tunnel = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            self.transport.write(data)  # type: ignore[union-attr]
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body_len = 0
        self.sha = hashlib.sha256()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)
        self.sha.update(body)

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self.respond(self.url.decode(), self.parser.get_method()))

    async def respond(self, url: str, method: bytes) -> None:
        t = self.transport
        assert t is not None
        path, _, query = url.partition("?")
        parts = path.strip("/").split("/")
        if parts[0] == "status":
            status = int(parts[1])
            t.write(b"HTTP/1.1 %d X\r\nx-backend: %s\r\n%s\r\n" % (
                status, NAME.encode(), b"" if status in (204, 304) else b"content-length: 0\r\n"))
            return
        if parts[0] == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
        if parts[0] == "ws":
            self.tunnel = True
            t.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
            return
        if parts[0] in ("bytes", "eof"):
            await self.stream(int(parts[1]), parts[0], "chunked" in query, method == b"HEAD")
            return
        body = json.dumps({
            "backend": NAME, "method": method.decode(), "path": url, "headers": self.headers,
            "body_len": self.body_len, "body_sha256": self.sha.hexdigest(),
        }).encode()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-backend: %s\r\ncontent-length: %d\r\n\r\n" % (
            NAME.encode(), len(body))
        t.write(head if method == b"HEAD" else head + body)

    async def stream(self, n: int, kind: str, chunked: bool, head: bool) -> None:
        t = self.transport
        assert t is not None
        if kind == "eof":
            t.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")
        elif chunked:
            t.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        else:
            t.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % n)
        if head:
            return
        left = n
        while left > 0:
            piece = CHUNK[: min(left, len(CHUNK))]
            left -= len(piece)
            await self.can_write.wait()
            if t.is_closing():
                return
            t.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            t.write(b"0\r\n\r\n")
        if kind == "eof":
            t.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=1024, reuse_address=True)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    import uvloop
    uvloop.run(main())
