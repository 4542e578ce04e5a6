"""Request tracing: a server span per sampled request, a client span per upstream try.

The manifest's `tracing:` reaches the proxy in its route table (`Settings`). On the hot
path (http_server.py, compiled) a request costs one comparison while tracing is off
(`Hub.trace_sample < 0`) and one random draw while it is on; only a sampled request
gets a `Trace`, which records its tries with a few attribute writes. Finished traces go into a bounded list (a full list
drops them, counted); a task of the event loop takes that list every `FLUSH_INTERVAL`
seconds, keeps the last `RECENT` traces for the dashboard (control op `traces`), and
hands batches of up to `BATCH_SPANS` spans to a worker thread that encodes them with
opentelemetry-proto and POSTs them (OTLP/HTTP, protobuf) to the collector, retrying
with backoff. Nothing a request waits for.

Sampling is parent-based (W3C Trace Context): a request whose `traceparent` says
"sampled" is recorded in that trace (the proxy's server span is the child of the
caller's span); one that says "not sampled" is not; one without starts a new trace,
recorded with probability `sample`. The traceparent forwarded to the upstream names
the client span of that try, so the upstream's spans nest under it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Final

log = logging.getLogger("mso.proxy")

#: Whether the last table turned tracing on (the exporter's counters are shown then).
enabled = False

MAX_QUEUED: Final = 2048  # finished traces waiting for the exporter; more are dropped
RECENT: Final = 100  # traces kept for the dashboard
BATCH_SPANS: Final = 512  # spans per export request
FLUSH_INTERVAL: Final = 1.0
RETRIES: Final = 3  # export attempts per batch (backoff 0.5 s, 1 s between them)
EXPORT_TIMEOUT: Final = 5.0


@dataclass(frozen=True)
class Settings:
    """The table's `tracing` object: where spans go and how many requests are traced."""

    endpoint: str = ""  # OTLP/HTTP traces URL; "": kept for the dashboard only
    sample: float = 0.01
    service_name: str = "mso-proxy"
    app: str = ""


_IDS: list[bytes] = []  # random 64-bit ids in hex, made 256 at a time (one syscall)


def _span_id() -> bytes:
    if not _IDS:
        h = os.urandom(8 * 256).hex().encode()
        _IDS.extend([h[i:i + 16] for i in range(0, 16 * 256, 16)])
    return _IDS.pop()


def new_trace_id() -> bytes:
    return _span_id() + _span_id()


# A forked child must not hand out the ids its parent still holds.
os.register_at_fork(after_in_child=_IDS.clear)


class Try:
    """One upstream attempt: a client span."""

    __slots__ = ("span_id", "endpoint", "subset", "address", "start", "end", "status")

    def __init__(self, span_id: bytes, endpoint: str, subset: str, address: str) -> None:
        self.span_id = span_id
        self.endpoint = endpoint
        self.subset = subset
        self.address = address
        self.start = time.time_ns()
        self.end = 0
        self.status = 0


class Trace:
    """A sampled request: its server span and the client span of each try."""

    __slots__ = ("trace_id", "parent", "span_id", "method", "url", "host", "start", "end",
                 "status", "cluster", "tries", "spare_head")

    def __init__(self, trace_id: bytes, parent: bytes, method: bytes, url: bytes,
                 host: bytes | None) -> None:
        if parent:
            try:  # a caller's ids must be hex to be encoded; otherwise start a new trace
                bytes.fromhex((trace_id + parent).decode("latin-1"))
            except ValueError:
                trace_id, parent = new_trace_id(), b""
        self.trace_id = trace_id
        self.parent = parent
        self.span_id = _span_id()
        self.method = method
        self.url = url
        self.host = host
        self.start = time.time_ns()
        self.end = 0
        self.status = 0
        self.cluster = ""
        self.tries: list[Try] = []
        self.spare_head = b""

    def header(self, span_id: bytes) -> bytes:
        return b"00-" + self.trace_id + b"-" + span_id + b"-01"

    def start_try(self, endpoint: str, subset: str, address: str, head: bytes) -> bytes:
        """A try begins: its client span, and `head` forwarding a traceparent naming it."""
        t = Try(_span_id(), endpoint, subset, address)
        self.tries.append(t)
        at = head.find(b"\r\ntraceparent: ") + 15
        if at < 15:
            return head
        return head[:at] + self.header(t.span_id) + head[at + 55:]

    def start_spare(self, endpoint: str, subset: str, address: str, head: bytes) -> None:
        self.spare_head = self.start_try(endpoint, subset, address, head)

    def end_try(self, endpoint: str, status: int) -> None:
        """The newest open try on `endpoint` ended (status 0: without a response)."""
        for t in reversed(self.tries):
            if t.end == 0 and t.endpoint == endpoint:
                t.end = time.time_ns()
                t.status = status
                return

    def finish(self, cluster: str, status: int) -> None:
        """The request is answered (or abandoned): close what is open and queue it."""
        now = time.time_ns()
        for t in self.tries:
            if t.end == 0:
                t.end = now
        self.end = now
        self.status = status
        self.cluster = cluster
        RECORDER.add(self)




# --- off the hot path: spans as data, export ------------------------------------------

def spans_of(tr: Trace, releases: dict[tuple[str, str], int]) -> list[dict[str, Any]]:
    """A finished trace as span records (the dashboard's and the encoder's input)."""
    service = tr.cluster.split("/", 1)[0] if tr.cluster else ""
    path = tr.url.split(b"?", 1)[0].decode("latin-1")
    method = tr.method.decode("latin-1")
    trace_id = tr.trace_id.decode()
    last = tr.tries[-1] if tr.tries else None
    attrs: dict[str, Any] = {"http.request.method": method, "url.path": path,
                             "http.response.status_code": tr.status, "mso.service": service}
    if tr.host:
        attrs["server.address"] = tr.host.split(b":", 1)[0].decode("latin-1")
    if last is not None:
        attrs.update(_endpoint_attrs(tr.cluster, last, releases))
    server = {"trace_id": trace_id, "span_id": tr.span_id.decode(),
              "parent": tr.parent.decode(), "name": f"{method} {service}".strip(),
              "kind": "server", "start": tr.start, "end": tr.end, "attrs": attrs,
              "error": tr.status >= 500 or tr.status == 0,
              "message": "" if tr.status else "no response"}
    out = [server]
    for i, t in enumerate(tr.tries):
        host, _, port = t.address.rpartition(":")
        cattrs: dict[str, Any] = {"http.request.method": method, "url.path": path,
                                  "server.address": host, "server.port": int(port or 0),
                                  "mso.service": service, "mso.try": i + 1,
                                  **_endpoint_attrs(tr.cluster, t, releases)}
        if t.status:
            cattrs["http.response.status_code"] = t.status
        out.append({"trace_id": trace_id, "span_id": t.span_id.decode(),
                    "parent": tr.span_id.decode(), "name": f"{method} {t.endpoint}",
                    "kind": "client", "start": t.start, "end": t.end, "attrs": cattrs,
                    "error": t.status >= 500 or t.status == 0,
                    "message": "" if t.status else "no response (lost, timed out or lost "
                                                   "the race to another try)"})
    return out


def _endpoint_attrs(cluster: str, t: Try, releases: dict[tuple[str, str], int]
                    ) -> dict[str, Any]:
    out: dict[str, Any] = {"mso.subset": t.subset, "mso.endpoint": t.endpoint}
    release = releases.get((cluster, t.subset))
    if release:
        out["mso.release"] = release
    return out


MAX_ATTRIBUTE_SETS: Final = 4096  # cached encodings of attribute sets, per exporter


def encode(spans: list[dict[str, Any]], settings: Settings,
           cache: dict[tuple[tuple[str, Any], ...], bytes] | None = None) -> bytes:
    """An OTLP ExportTraceServiceRequest (protobuf) of `spans`.

    Spans of one endpoint share most attributes: each such set is encoded once (a Span
    holding only them, serialized by opentelemetry-proto) and merged into every span that
    has it, which costs a fifth of setting each attribute again; only `url.path` is set
    per span. `cache` keeps those encodings from one batch to the next."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    _attributes(rs.resource.attributes, {"service.name": settings.service_name,
                                         **({"service.namespace": settings.app}
                                            if settings.app else {})})
    ss = rs.scope_spans.add()
    ss.scope.name = "mso.proxy"
    if cache is None:
        cache = {}
    for s in spans:
        span = ss.spans.add()
        span.trace_id = bytes.fromhex(s["trace_id"])
        span.span_id = bytes.fromhex(s["span_id"])
        if s["parent"]:
            span.parent_span_id = bytes.fromhex(s["parent"])
        span.name = s["name"]
        span.kind = Span.SPAN_KIND_SERVER if s["kind"] == "server" else Span.SPAN_KIND_CLIENT
        span.start_time_unix_nano = s["start"]
        span.end_time_unix_nano = s["end"]
        attrs = s["attrs"]
        shared = tuple((k, v) for k, v in attrs.items() if k != "url.path")
        blob = cache.get(shared)
        if blob is None:
            if len(cache) >= MAX_ATTRIBUTE_SETS:
                cache.clear()
            template = Span()
            _attributes(template.attributes, dict(shared))
            blob = cache[shared] = template.SerializeToString()
        span.MergeFromString(blob)
        if "url.path" in attrs:
            _attributes(span.attributes, {"url.path": attrs["url.path"]})
        if s["error"]:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = s["message"]
    return bytes(req.SerializeToString())


def _attributes(target: Any, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        kv = target.add()
        kv.key = key
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        else:
            kv.value.string_value = str(value)


def post(url: str, body: bytes) -> None:
    """One export request; raises OSError when the collector did not take it."""
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/x-protobuf"})
    with _OPENER.open(req, timeout=EXPORT_TIMEOUT) as resp:
        resp.read()


# Straight to the collector: no HTTP(S)_PROXY from the environment.
_OPENER: Final = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Recorder:
    """The queue between the hot path and the exporter, and the recent traces."""

    def __init__(self) -> None:
        self.queue: list[Trace] = []
        self.recent: deque[list[dict[str, Any]]] = deque(maxlen=RECENT)
        self.settings = Settings()
        self.releases: Callable[[], dict[tuple[str, str], int]] = dict
        self.post: Callable[[str, bytes], None] = post
        self.dropped = 0  # spans dropped: queue full, or the collector refused them
        self.exported = 0  # spans the collector took
        self.failed_exports = 0  # export requests given up after RETRIES attempts
        self.backoff = 0.5  # seconds before the first retry of an export; doubles
        self.encoded: dict[tuple[tuple[str, Any], ...], bytes] = {}  # see encode()
        self._task: asyncio.Task[None] | None = None

    def add(self, tr: Trace) -> None:
        if len(self.queue) < MAX_QUEUED:
            self.queue.append(tr)
        else:
            self.dropped += 1 + len(tr.tries)

    def configure(self, settings: Settings | None,
                  releases: Callable[[], dict[tuple[str, str], int]]) -> None:
        """Apply a table's settings (None: tracing off); starts the flush task. The
        sampling share goes to the hot path's `Hub.trace_sample` (runtime.py)."""
        global enabled
        self.releases = releases
        if settings is None:
            enabled = False
            return
        self.settings = settings
        enabled = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            try:
                await self.flush()
            except Exception:  # a bug here must not end tracing, nor reach a request
                log.exception("tracing: a batch of traces was lost")

    async def flush(self) -> None:
        """Take the queued traces: keep them for the dashboard, export them."""
        batch, self.queue = self.queue, []
        if not batch:
            return
        # Made in a worker thread: the event loop keeps serving between its GIL slices.
        spans = await asyncio.get_running_loop().run_in_executor(
            None, self._spans, batch, dict(self.releases()))
        endpoint = self.settings.endpoint
        if not endpoint:
            return
        for i in range(0, len(spans), BATCH_SPANS):
            await self._export(endpoint, spans[i:i + BATCH_SPANS])

    def _spans(self, batch: list[Trace], releases: dict[tuple[str, str], int]
               ) -> list[dict[str, Any]]:
        spans: list[dict[str, Any]] = []
        for tr in batch:
            one = spans_of(tr, releases)
            self.recent.append(one)  # deque.append is thread-safe
            spans += one
        return spans

    async def _export(self, endpoint: str, spans: list[dict[str, Any]]) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        delay = self.backoff
        for attempt in range(RETRIES):
            try:
                await loop.run_in_executor(None, self._send, endpoint, spans, settings)
            except (OSError, ValueError) as exc:
                if attempt + 1 == RETRIES:
                    self.failed_exports += 1
                    self.dropped += len(spans)
                    log.warning("tracing: %d spans not exported to %s: %s",
                                len(spans), endpoint, exc)
                    return
                await asyncio.sleep(delay)
                delay *= 2
            else:
                self.exported += len(spans)
                return

    def _send(self, endpoint: str, spans: list[dict[str, Any]], settings: Settings) -> None:
        self.post(endpoint, encode(spans, settings, self.encoded))

    def traces(self) -> list[list[dict[str, Any]]]:
        """The recent traces, newest first (control op `traces`)."""
        return list(reversed(list(self.recent)))

    def counters(self) -> dict[str, int]:
        return {"exported": self.exported, "dropped": self.dropped,
                "failed_exports": self.failed_exports, "queued": len(self.queue)}

    async def close(self) -> None:
        """Export what is queued (once, bounded), then stop."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        try:
            await asyncio.wait_for(self.flush(), EXPORT_TIMEOUT)
        except (asyncio.TimeoutError, OSError):
            pass


RECORDER: Final = Recorder()
