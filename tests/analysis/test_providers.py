"""Tests for metric providers against real loopback HTTP servers (mso.analysis.providers)."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from mso.analysis.providers import (
    Measurement,
    MetricProvider,
    PrometheusProvider,
    ProxyMetricsProvider,
    RolloutContext,
    WebhookProvider,
    redact_url,
    substitute,
    unknown_placeholders,
)


class FakeServer:
    """A real HTTP server on 127.0.0.1:0 answering with a configurable status and body."""

    def __init__(self) -> None:
        self.status = 200
        self.body: Any = {}  # or a callable: request path -> body
        self.delay = threading.Event()  # set: hold every answer until released
        self.release = threading.Event()
        self.requests: list[tuple[str, str, bytes]] = []
        self.authorization: list[str | None] = []
        self.hosts: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                server.requests.append((self.command, self.path, self.rfile.read(length)))
                server.authorization.append(self.headers.get("authorization"))
                server.hosts.append(self.headers.get("host"))
                if server.delay.is_set():
                    server.release.wait(30)
                body = server.body(self.path) if callable(server.body) else server.body
                payload = json.dumps(body).encode()
                self.send_response(server.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def sample(provider: MetricProvider, final: bool = False) -> Measurement:
    return asyncio.run(provider.sample(final=final))


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {"i": str(i)}, "value": [1.0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_prometheus_value_above_max_fails_and_below_passes(server: FakeServer) -> None:
    provider = PrometheusProvider(server.url, "rate(errors[1m])", max=0.05)
    server.body = vector("0.01", "0.2")
    failed = sample(provider)
    assert failed.phase == "fail" and failed.value == pytest.approx(0.2)
    server.body = vector("0.01")
    assert sample(provider).phase == "pass"
    method, path, _ = server.requests[-1]
    assert method == "GET" and urlparse(path).path == "/api/v1/query"
    assert parse_qs(urlparse(path).query)["query"] == ["rate(errors[1m])"]


def test_prometheus_scalar_result(server: FakeServer) -> None:
    server.body = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}
    assert sample(PrometheusProvider(server.url, "q", max=5)).value == 3.0


@pytest.mark.parametrize(
    ("status", "body", "fragment"),
    [
        (200, vector(), "no data"),
        (200, vector("NaN"), "NaN"),
        (200, {"status": "error", "error": "bad query"}, "unusable"),
        (200, ["not", "an", "object"], "unusable"),
        (503, {}, "HTTP 503"),
    ],
)
def test_prometheus_problems_are_inconclusive(
    server: FakeServer, status: int, body: Any, fragment: str
) -> None:
    server.status, server.body = status, body
    measurement = sample(PrometheusProvider(server.url, "q", max=1))
    assert measurement.phase == "inconclusive" and fragment in measurement.reason


def test_prometheus_unreachable_is_inconclusive(dead_url: str) -> None:
    measurement = sample(PrometheusProvider(dead_url, "q", max=1, timeout=2))
    assert measurement.phase == "inconclusive" and "unreachable" in measurement.reason


def test_webhook_posts_context_and_maps_status(server: FakeServer) -> None:
    provider = WebhookProvider(server.url + "/check", context={"service": "orders", "step": 2})
    assert sample(provider).phase == "pass"
    method, path, body = server.requests[-1]
    assert (method, path) == ("POST", "/check")
    assert json.loads(body) == {"service": "orders", "step": 2, "final": False}
    server.status = 500
    failed = sample(provider, final=True)
    assert failed.phase == "fail" and "500" in failed.reason


def test_webhook_unreachable_is_inconclusive(dead_url: str) -> None:
    assert sample(WebhookProvider(dead_url, timeout=2)).phase == "inconclusive"


def proxy_snapshot(stable: tuple[int, int], canary: tuple[int, int]) -> dict[str, Any]:
    def ep(requests: int, errors: int) -> dict[str, Any]:
        return {"requests": requests, "responses": {"5xx": errors}, "connect_errors": 0,
                "latency_buckets_ms": [10, 100], "latency_counts": [requests, 0, 0]}
    return {"ok": True, "metrics": {"clusters": {"orders/http": {"subsets": {
        "stable": {"endpoints": {"s1": ep(*stable)}},
        "canary": {"endpoints": {"c1": ep(*canary)}}}}}}}


class SnapshotFeed:
    def __init__(self, replies: list[Mapping[str, Any] | Exception]) -> None:
        self.replies = replies

    async def __call__(self) -> Mapping[str, Any]:
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_proxy_provider_takes_a_baseline_then_feeds_the_judge() -> None:
    feed = SnapshotFeed([
        proxy_snapshot((1000, 0), (0, 0)),      # pre-rollout stable traffic: baseline only
        proxy_snapshot((1900, 1), (100, 0)),
        ConnectionRefusedError("proxy down"),
        proxy_snapshot((2800, 1), (200, 0)),
        proxy_snapshot((3700, 2), (300, 100)),
    ])
    provider = ProxyMetricsProvider(feed, "orders/http")
    first = sample(provider)
    assert first.phase == "inconclusive" and "baseline" in first.reason
    second = sample(provider)
    assert second.verdict is not None and second.verdict.stable.requests == 900
    down = sample(provider)
    assert down.phase == "inconclusive" and "unavailable" in down.reason
    third = sample(provider)
    assert third.verdict is not None and third.verdict.canary.requests == 200
    last = sample(provider)
    assert last.phase == "fail" and last.value == pytest.approx(100 / 300)


def test_proxy_provider_final_pass_and_reset() -> None:
    feed = SnapshotFeed([proxy_snapshot((0, 0), (0, 0)), proxy_snapshot((900, 0), (100, 0)),
                         proxy_snapshot((900, 0), (100, 0))])
    provider = ProxyMetricsProvider(feed, "orders/http")
    sample(provider)
    assert sample(provider, final=True).phase == "pass"
    provider.reset()
    assert sample(provider, final=True).phase == "inconclusive"


def test_proxy_provider_refusal_is_inconclusive() -> None:
    provider = ProxyMetricsProvider(SnapshotFeed([{"ok": False, "error": "x", "metrics": None}]),
                                    "orders/http")
    assert sample(provider).phase == "inconclusive"


# -- per-subset queries -------------------------------------------------------------------

CONTEXT = RolloutContext("orders", stable_release=3, canary_release=4)
QUERY = 'sum(rate(app_errors_total{subset="{{subset}}", release="{{ release }}"}[1m]))'


def test_substitution_of_subset_service_and_release() -> None:
    text = 'x{s="{{subset}}",svc="{{service}}",r="{{ release }}",o="{{other}}"}'
    assert substitute(text, CONTEXT.placeholders("canary")) == \
        'x{s="canary",svc="orders",r="4",o="{{other}}"}'
    assert substitute(text, CONTEXT.placeholders("stable")) == \
        'x{s="stable",svc="orders",r="3",o="{{other}}"}'
    assert unknown_placeholders(text) == ["other"]
    provider = PrometheusProvider("http://p", QUERY, max=1, context=CONTEXT)
    assert provider.queries() == {
        "stable": 'sum(rate(app_errors_total{subset="stable", release="3"}[1m]))',
        "canary": 'sum(rate(app_errors_total{subset="canary", release="4"}[1m]))'}


def by_subset(stable: Any, canary: Any) -> Any:
    """A Prometheus answering each subset's query with its own vector (or raw body)."""
    def answer(path: str) -> Any:
        query = parse_qs(urlparse(path).query)["query"][0]
        value = canary if '"canary"' in query else stable
        return vector(*value) if isinstance(value, tuple) else value
    return answer


@pytest.mark.parametrize(
    ("stable", "canary", "phase", "fragment"),
    [
        (("0",), ("0.01",), "pass", "canary 0.01, stable 0, max 0.05"),
        (("0",), ("0.3",), "fail", "canary 0.3 > max 0.05 (stable 0)"),
        (("0.2",), ("0.3",), "inconclusive", "does not single out the canary"),
        (("0.2",), ("0.01",), "pass", "canary 0.01"),
        (("0",), (), "inconclusive", 'no data: sum(rate(app_errors_total{subset="canary"'),
        ((), ("0.3",), "inconclusive", 'no data: sum(rate(app_errors_total{subset="stable"'),
        (("0",), ("NaN",), "inconclusive", "NaN"),
        (("0",), {"status": "error", "error": "parse error"}, "inconclusive", "parse error"),
    ],
)
def test_each_subset_runs_its_query_and_the_stable_is_the_control(
        server: FakeServer, stable: Any, canary: Any, phase: str, fragment: str) -> None:
    server.body = by_subset(stable, canary)
    measured = sample(PrometheusProvider(server.url, QUERY, max=0.05, context=CONTEXT))
    assert measured.phase == phase and fragment in measured.reason, measured
    queries = sorted(parse_qs(urlparse(p).query)["query"][0] for _, p, _ in server.requests)
    assert queries == sorted(PrometheusProvider("u", QUERY, 1, CONTEXT).queries().values())


def test_a_query_that_does_not_depend_on_the_subset_runs_once_as_a_guardrail(
        server: FakeServer) -> None:
    server.body = vector("0.9")
    measured = sample(PrometheusProvider(server.url, "db_error_ratio", max=0.5,
                                         context=CONTEXT))
    assert measured.phase == "fail" and measured.reason == "db_error_ratio = 0.9 > max 0.5"
    assert len(server.requests) == 1


def test_a_timeout_is_inconclusive(server: FakeServer) -> None:
    server.delay.set()
    measured = sample(PrometheusProvider(server.url, QUERY, max=1, context=CONTEXT,
                                         timeout=0.3))
    assert measured.phase == "inconclusive" and "timed out after 0.3s" in measured.reason
    hook = sample(WebhookProvider(server.url, timeout=0.3))
    assert hook.phase == "inconclusive" and "timed out" in hook.reason


def test_credentials_in_urls_never_reach_reasons(dead_url: str, server: FakeServer) -> None:
    assert redact_url("https://user:s3cret@prom.example:9090/x?q=1") == \
        "https://***@prom.example:9090/x?q=1"
    assert redact_url("http://prom:9090/") == "http://prom:9090/"
    secret_url = dead_url.replace("http://", "http://admin:hunter22@")
    for provider in (PrometheusProvider(secret_url, "q", max=1, timeout=2),
                     WebhookProvider(secret_url, timeout=2)):
        measured = sample(provider)
        assert measured.phase == "inconclusive"
        assert "hunter22" not in measured.reason and "admin" not in measured.reason
        assert "hunter22" not in provider.describe()
    server.status = 500
    server.body = "token hunter22 rejected"
    hook = WebhookProvider(server.url.replace("http://", "http://admin:hunter22@"))
    failed = sample(hook)
    assert failed.phase == "fail" and "hunter22" not in failed.reason
    # The userinfo is sent as basic auth, not in the URL (which httpx logs).
    assert server.authorization[-1] == "Basic " + base64.b64encode(b"admin:hunter22").decode()
    server.status, server.body = 200, vector("0")
    assert sample(PrometheusProvider(server.url.replace("http://", "http://u%40x:p@"), "q",
                                     max=1)).phase == "pass"
    assert server.authorization[-1] == "Basic " + base64.b64encode(b"u@x:p").decode()
