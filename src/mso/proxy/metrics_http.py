"""`metrics` listener mode: serves the Prometheus text exposition at /metrics."""
from __future__ import annotations

import asyncio
from typing import Callable, cast

import httptools

from .exposition import CONTENT_TYPE
from .safety import error_response


class MetricsConnection(asyncio.Protocol):
    def __init__(self, render: Callable[[], bytes]) -> None:
        self.render = render
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.write(error_response(400))
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        t = self.transport
        if t is None:
            return
        path = self.url.split(b"?", 1)[0]
        if path != b"/metrics":
            t.write(error_response(404))
            t.close()
            return
        body = self.render()
        head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (
            CONTENT_TYPE, len(body))
        if not self.parser.should_keep_alive():
            t.write(head + b"connection: close\r\n\r\n" + body)
            t.close()
        else:
            t.write(head + b"\r\n" + body)
