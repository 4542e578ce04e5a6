"""Tracing through a real proxy process: spans exported over OTLP/HTTP to a real receiver
that decodes them with opentelemetry-proto (tests/e2e/otlp.py)."""
from __future__ import annotations

import http.client
import json
import urllib.request
from typing import Any, Callable, Iterator

import pytest

from mso.proxy.table import TableError, parse_table
from tests.e2e.otlp import OtlpReceiver

from .conftest import Backend, Proxy, http_table, wait_for

pytestmark = pytest.mark.e2e

INCOMING = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def traced_table(backends: list[Backend], receiver: OtlpReceiver, sample: float = 1.0,
                 **cluster: Any) -> dict[str, Any]:
    t = http_table({"web": {"stable": (100, backends)}},
                   extra_listeners=[{"name": "metrics", "bind": "127.0.0.1", "port": 0,
                                     "mode": "metrics"}])
    t["clusters"]["web"]["subsets"]["stable"]["release"] = 7
    t["clusters"]["web"].update(cluster)
    t["tracing"] = {"endpoint": receiver.url, "sample": sample, "app": "shop"}
    return t


def get(port: int, path: str = "/echo", headers: dict[str, str] | None = None
        ) -> tuple[int, dict[str, Any]]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return r.status, json.loads(body) if body.startswith(b"{") else {}
    finally:
        c.close()


def forwarded(echo: dict[str, Any]) -> str:
    return next(v for k, v in echo["headers"] if k.lower() == "traceparent")


def test_a_request_without_traceparent_gets_a_server_and_a_client_span(
        proxy: Proxy, backends: Callable[[str], Backend], receiver: OtlpReceiver) -> None:
    b = backends("b1")
    port = proxy.set_table(traced_table([b], receiver))["gw"]
    status, echo = get(port, "/echo?x=1", {"host": "shop.example:8080"})
    assert status == 200
    _, trace_id, parent, flags = forwarded(echo).split("-")
    spans = receiver.wait(lambda: len(receiver.trace(trace_id)) == 2 and receiver.trace(trace_id))
    server = next(s for s in spans if s.kind == "server")
    client = next(s for s in spans if s.kind == "client")
    assert server.parent == "" and client.parent == server.span_id
    assert parent == client.span_id and flags == "01"  # the upstream nests under the try
    assert server.start <= client.start <= client.end <= server.end
    assert server.attrs == {
        "http.request.method": "GET", "url.path": "/echo", "http.response.status_code": 200,
        "server.address": "shop.example", "mso.service": "web", "mso.subset": "stable",
        "mso.endpoint": "b1", "mso.release": 7}
    assert client.attrs["server.address"] == "127.0.0.1"
    assert client.attrs["server.port"] == b.port
    assert client.attrs["http.response.status_code"] == 200
    assert (client.attrs["mso.endpoint"], client.attrs["mso.release"]) == ("b1", 7)
    assert not server.error and not client.error
    assert server.resource == {"service.name": "mso-proxy", "service.namespace": "shop"}
    assert receiver.content_types[0] == "application/x-protobuf" and not receiver.errors


def test_an_incoming_traceparent_is_continued_and_its_flag_honoured(
        proxy: Proxy, backends: Callable[[str], Backend], receiver: OtlpReceiver) -> None:
    b = backends("b1")
    port = proxy.set_table(traced_table([b], receiver, sample=0.0))["gw"]
    _, echo = get(port, headers={"traceparent": INCOMING})
    spans = receiver.wait(lambda: len(receiver.trace("0af7651916cd43dd8448eb211c80319c")) == 2
                          and receiver.trace("0af7651916cd43dd8448eb211c80319c"))
    server = next(s for s in spans if s.kind == "server")
    client = next(s for s in spans if s.kind == "client")
    assert server.parent == "b7ad6b7169203331"
    assert forwarded(echo) == f"00-0af7651916cd43dd8448eb211c80319c-{client.span_id}-01"
    # Not sampled upstream: not recorded, and forwarded as it came.
    unsampled = INCOMING[:-2] + "00"
    _, echo = get(port, headers={"traceparent": unsampled})
    assert forwarded(echo) == unsampled
    # No traceparent at sample 0: a new trace, marked not sampled for the upstream.
    _, echo = get(port)
    assert forwarded(echo).endswith("-00")
    # A marker request shows that the exporter is past the two above.
    _, echo = get(port, headers={"traceparent": INCOMING.replace("0af7", "1af7")})
    receiver.wait(lambda: receiver.trace("1af7651916cd43dd8448eb211c80319c"))
    assert {s.trace_id for s in receiver.spans} == {"0af7651916cd43dd8448eb211c80319c",
                                                   "1af7651916cd43dd8448eb211c80319c"}


def test_a_retry_shows_as_two_client_spans(
        proxy: Proxy, backends: Callable[[str], Backend], receiver: OtlpReceiver) -> None:
    dead, good = backends("dead"), backends("good")
    dead.kill()  # its port refuses connections: the first try fails, the retry answers
    port = proxy.set_table(traced_table([dead, good], receiver))["gw"]
    for _ in range(2):  # round robin: one of the two starts with the dead endpoint
        assert get(port)[0] == 200

    def retried() -> Any:
        return next((t for t in ({s.trace_id for s in receiver.servers()})
                     if len(receiver.trace(t)) == 3), None)
    spans = receiver.trace(receiver.wait(retried, what="a trace with two tries"))
    server = next(s for s in spans if s.kind == "server")
    tries = sorted((s for s in spans if s.kind == "client"), key=lambda s: s.start)
    assert [t.attrs["mso.endpoint"] for t in tries] == ["dead", "good"]
    assert [t.attrs["mso.try"] for t in tries] == [1, 2]
    assert all(t.parent == server.span_id for t in tries)
    assert tries[0].error and "http.response.status_code" not in tries[0].attrs
    assert not tries[1].error and tries[1].attrs["http.response.status_code"] == 200
    assert server.attrs["mso.endpoint"] == "good" and not server.error


def test_a_5xx_is_an_error_and_the_recent_traces_are_readable(
        proxy: Proxy, backends: Callable[[str], Backend], receiver: OtlpReceiver) -> None:
    b = backends("b1")
    port = proxy.set_table(traced_table([b], receiver))["gw"]
    assert get(port, "/status/503")[0] == 503
    receiver.wait(lambda: receiver.servers())
    server = receiver.servers()[0]
    assert server.error and server.attrs["http.response.status_code"] == 503
    recent = proxy.call("traces")
    assert [s["span_id"] for s in recent[0]][0] == server.span_id
    assert recent[0][0]["kind"] == "server" and recent[0][1]["kind"] == "client"


def test_export_is_retried_and_counted(
        proxy: Proxy, backends: Callable[[str], Backend], receiver: OtlpReceiver) -> None:
    b = backends("b1")
    ports = proxy.set_table(traced_table([b], receiver))
    receiver.fail_next(1)
    assert get(ports["gw"])[0] == 200
    receiver.wait(lambda: receiver.servers())
    assert receiver.requests >= 2  # the 503 was retried

    def counters() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics") as r:
            text = r.read().decode()
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line.startswith("mso_proxy_span")}
    got = wait_for(lambda: counters().get("mso_proxy_spans_exported_total") == 2 and counters(),
                   what="the exported counter")
    assert got["mso_proxy_spans_dropped_total"] == 0
    assert got["mso_proxy_span_exports_failed_total"] == 0


@pytest.mark.parametrize("tracing, message", [
    ({"endpoint": "ftp://x"}, "table.tracing.endpoint: expected an http(s) URL"),
    ({"sample": 2}, "table.tracing.sample: expected a fraction 0-1"),
    ([], "table.tracing: expected an object"),
])
def test_the_table_refuses_bad_tracing_settings(tracing: Any, message: str) -> None:
    with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_table({"version": 1, "listeners": [], "tracing": tracing})


def test_a_caller_trace_id_that_is_not_hex_starts_a_new_trace() -> None:
    from mso.proxy import tracing
    tr = tracing.Trace(b"zz" * 16, b"cd" * 8, b"GET", b"/", None)
    assert tr.parent == b"" and tr.trace_id != b"zz" * 16
    assert len(bytes.fromhex(tr.trace_id.decode())) == 16
    kept = tracing.Trace(b"AB" * 16, b"cd" * 8, b"GET", b"/", None)
    assert (kept.trace_id, kept.parent) == (b"AB" * 16, b"cd" * 8)


def test_the_recorder_is_bounded_and_counts_what_it_drops() -> None:
    import asyncio

    from mso.proxy import tracing

    rec = tracing.Recorder()
    rec.backoff = 0.0
    sent: list[bytes] = []
    failures = [OSError("refused"), OSError("refused")]

    def post(url: str, body: bytes) -> None:
        if failures:
            raise failures.pop()
        sent.append(body)
    rec.post = post
    rec.settings = tracing.Settings(endpoint="http://127.0.0.1:9/v1/traces")

    def finished(i: int) -> tracing.Trace:
        tr = tracing.Trace(tracing.new_trace_id(), b"", b"GET", b"/%d" % i, None)
        tr.start_try("web-1", "stable", "127.0.0.1:1", b"GET / HTTP/1.1\r\n\r\n")
        return tr
    for i in range(tracing.MAX_QUEUED + 3):
        finished(i).finish("web/http", 200)  # goes to the module's RECORDER: moved below
    rec.queue, tracing.RECORDER.queue = tracing.RECORDER.queue, []
    rec.dropped, tracing.RECORDER.dropped = tracing.RECORDER.dropped, 0
    assert len(rec.queue) == tracing.MAX_QUEUED and rec.dropped == 3 * 2
    asyncio.run(rec.flush())  # two failures, then the third attempt of the first batch
    spans = 2 * tracing.MAX_QUEUED
    assert rec.exported == spans and rec.failed_exports == 0
    assert len(sent) == spans // tracing.BATCH_SPANS
    assert len(rec.traces()) == tracing.RECENT
    assert rec.traces()[0][0]["attrs"]["url.path"] == f"/{tracing.MAX_QUEUED - 1}"
    failures.extend([OSError("down")] * tracing.RETRIES)
    rec.queue.append(finished(0))
    asyncio.run(rec.flush())
    assert (rec.failed_exports, rec.dropped, rec.exported) == (1, 6 + 2, spans)
