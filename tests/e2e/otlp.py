"""A real OTLP/HTTP trace receiver for tests: decodes what arrives with opentelemetry-proto.

`OtlpReceiver()` listens on 127.0.0.1 (an ephemeral port) in a thread; `url` is its
`/v1/traces` endpoint. Every POST body is parsed as an `ExportTraceServiceRequest`
(a body that does not parse fails the test: it is kept in `errors`), and each span is
kept as a plain `ReceivedSpan`. `fail_next(n)` answers the next n requests with 503
(the exporter must retry).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest, ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent: str
    name: str
    kind: str  # "server" or "client"
    start: int
    end: int
    attrs: dict[str, Any]
    error: bool
    resource: dict[str, Any] = field(default_factory=dict)


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return getattr(v, which) if which else None


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self.content_types: list[str] = []
        self.errors: list[str] = []
        self._fail = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver.requests += 1
                    receiver.content_types.append(self.headers.get("content-type") or "")
                    if receiver._fail:
                        receiver._fail -= 1
                        self.send_response(503)
                        self.send_header("content-length", "0")
                        self.end_headers()
                        return
                    if self.path != "/v1/traces":
                        receiver.errors.append(f"POST to {self.path}")
                    try:
                        receiver._take(ExportTraceServiceRequest.FromString(body))
                    except DecodeError as exc:
                        receiver.errors.append(f"undecodable body: {exc}")
                out = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1/traces"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _take(self, req: ExportTraceServiceRequest) -> None:
        for rs in req.resource_spans:
            resource = {a.key: _value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(ReceivedSpan(
                        trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent=s.parent_span_id.hex(), name=s.name,
                        kind={Span.SPAN_KIND_SERVER: "server",
                              Span.SPAN_KIND_CLIENT: "client"}.get(s.kind, str(s.kind)),
                        start=s.start_time_unix_nano, end=s.end_time_unix_nano,
                        attrs={a.key: _value(a.value) for a in s.attributes},
                        error=s.status.code == Status.STATUS_CODE_ERROR,
                        resource=resource))

    def fail_next(self, n: int) -> None:
        with self._lock:
            self._fail = n

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def servers(self) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.kind == "server"]

    def wait(self, cond: Callable[[], Any], timeout: float = 30.0, what: str = "spans") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; got {self.spans!r}")
            time.sleep(0.02)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
