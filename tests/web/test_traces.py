"""The Traces page's waterfall (mso.web.data.waterfall) over span records as the proxy
keeps them (mso.proxy.tracing.spans_of), and the page itself rendered by the dashboard."""

from __future__ import annotations

from typing import Any

from mso.proxy import tracing
from mso.web.data import waterfall


def finished_trace(with_retry: bool) -> list[dict[str, Any]]:
    tr = tracing.Trace(b"ab" * 16, b"cd" * 8, b"GET", b"/api/orders?x=1", b"shop:8080")
    tr.start = 1_000_000_000
    if with_retry:
        first = tracing.Try(b"11" * 8, "orders-1", "stable", "127.0.0.1:4001")
        first.start, first.end = 1_001_000_000, 1_002_000_000
        tr.tries.append(first)
    second = tracing.Try(b"22" * 8, "orders-2", "canary", "127.0.0.1:4002")
    second.start, second.end, second.status = 1_002_000_000, 1_009_000_000, 200
    tr.tries.append(second)
    tr.end, tr.status, tr.cluster = 1_010_000_000, 200, "orders/http"
    return tracing.spans_of(tr, {("orders/http", "canary"): 3})


def test_spans_carry_the_conventions_and_mso_labels() -> None:
    server, first, second = finished_trace(with_retry=True)
    assert server["attrs"] == {
        "http.request.method": "GET", "url.path": "/api/orders", "server.address": "shop",
        "http.response.status_code": 200, "mso.service": "orders", "mso.subset": "canary",
        "mso.endpoint": "orders-2", "mso.release": 3}
    assert (server["parent"], first["parent"]) == ("cd" * 8, server["span_id"])
    assert first["error"] and "http.response.status_code" not in first["attrs"]
    assert first["attrs"]["mso.try"] == 1 and "mso.release" not in first["attrs"]
    assert second["attrs"]["server.port"] == 4002 and not second["error"]


def test_the_waterfall_places_each_span_on_the_trace_axis() -> None:
    (t,) = waterfall([finished_trace(with_retry=True)])
    assert (t["trace_id"], t["service"], t["status"], t["ms"], t["tries"]) == (
        "ab" * 16, "orders", 200, 10.0, 2)
    server, first, second = t["rows"]
    assert (server["label"], server["left"], server["width"]) == ("GET /api/orders", 0, 100)
    assert (first["label"], first["left"], first["width"], first["error"]) == (
        "try 1 → orders-1", 10.0, 10.0, True)
    assert (second["left"], second["width"], second["ms"]) == (20.0, 70.0, 7.0)
    assert "mso.release=3" in second["title"]


def test_the_waterfall_filters_by_service() -> None:
    both = [finished_trace(with_retry=False), finished_trace(with_retry=True)]
    assert len(waterfall(both, "orders")) == 2 and waterfall(both, "web") == []
    assert waterfall([[]]) == []
