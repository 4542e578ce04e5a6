"""Providers whose requests travel through the gateway's `fetch` (mso.analysis.relay,
mso.proxy.fetch): the same measurements as a direct request, over a real control socket
to a real loopback HTTP server; URLs outside the table's allow list are refused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from mso.analysis.providers import Measurement, PrometheusProvider, RolloutContext, WebhookProvider
from mso.analysis.relay import GatewayTransport
from mso.analysis.run import request_urls
from mso.proxy.client import ProxyClient
from mso.proxy.control import serve_control
from mso.proxy.fetch import allowed_key
from mso.proxy.table import TableError, parse_table
from tests.analysis.test_providers import FakeServer, server, vector  # noqa: F401

CONTEXT = RolloutContext("web", 1, 2)


class Handler:
    """A control handler whose current table allows `fetch` of the given URLs."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table

    def current_table(self) -> Any:
        return self.table


async def through_gateway(tmp_path: Path, allowed: list[str],
                          use: Callable[[GatewayTransport], Awaitable[Measurement]],
                          hosts: dict[str, str] | None = None) -> Measurement:
    sock = str(tmp_path / "control.sock")
    table = {"fetch": allowed, "hosts": hosts or {}}
    srv = await serve_control(Handler(table), sock)  # type: ignore[arg-type]
    client = ProxyClient(sock, timeout=10.0)
    try:
        return await use(GatewayTransport(client.fetch))
    finally:
        await client.close()
        srv.close()
        await srv.wait_closed()


def prometheus(url: str, tmp_path: Path, allowed: list[str], max: float = 0.1,
               timeout: float = 5.0) -> Measurement:
    query = 'rate(errors{subset="{{subset}}"}[1m])'
    return asyncio.run(through_gateway(tmp_path, allowed, lambda t: PrometheusProvider(
        url, query, max, CONTEXT, timeout=timeout, transport=t).sample()))


def by_subset(path: str) -> dict[str, Any]:
    query = parse_qs(urlparse(path).query)["query"][0]
    return vector("0.5" if "canary" in query else "0.01")


def test_a_canary_is_judged_through_the_gateway(server: FakeServer, tmp_path: Path) -> None:
    server.body = by_subset
    allowed = request_urls([{"prometheus": {"url": server.url, "query": "q", "max": 1}}])
    measured = prometheus(server.url, tmp_path, allowed)
    assert (measured.phase, measured.value, measured.stable_value) == ("fail", 0.5, 0.01)
    paths = sorted(parse_qs(urlparse(p).query)["query"][0] for _, p, _ in server.requests)
    assert paths == ['rate(errors{subset="canary"}[1m])', 'rate(errors{subset="stable"}[1m])']
    server.body = vector("0.01")
    assert prometheus(server.url, tmp_path, allowed).phase == "pass"


def test_credentials_travel_as_basic_auth_and_never_in_the_allow_list(
        server: FakeServer, tmp_path: Path) -> None:
    server.body = vector("0.01")
    url = server.url.replace("http://", "http://user:s3cret@")
    allowed = request_urls([{"prometheus": {"url": url, "query": "q", "max": 1}}])
    assert allowed == [server.url + "/api/v1/query"]
    assert prometheus(url, tmp_path, allowed).phase == "pass"
    assert server.authorization[-1] == "Basic dXNlcjpzM2NyZXQ="


def test_a_url_outside_the_allow_list_is_inconclusive_and_not_requested(
        server: FakeServer, tmp_path: Path) -> None:
    measured = prometheus(server.url, tmp_path, ["http://prometheus:9090/api/v1/query"])
    assert measured.phase == "inconclusive"
    assert "not a provider URL of the current table" in measured.reason
    assert server.requests == []


@pytest.mark.parametrize(("body", "fragment"), [
    (vector(), "no data"), (vector("NaN"), "NaN"),
    ({"status": "error", "error": "bad query"}, "unusable")])
def test_no_data_nan_and_errors_through_the_gateway_are_inconclusive(
        server: FakeServer, tmp_path: Path, body: Any, fragment: str) -> None:
    server.body = body
    measured = prometheus(server.url, tmp_path, [server.url + "/api/v1/query"])
    assert measured.phase == "inconclusive" and fragment in measured.reason, measured


def test_unreachable_and_timed_out_providers_are_inconclusive(
        server: FakeServer, dead_url: str, tmp_path: Path) -> None:
    dead = prometheus(dead_url, tmp_path, [dead_url + "api/v1/query"])
    assert dead.phase == "inconclusive" and "unreachable" in dead.reason, dead
    server.delay.set()
    slow = prometheus(server.url, tmp_path, [server.url + "/api/v1/query"], timeout=0.5)
    assert slow.phase == "inconclusive" and "timed out" in slow.reason, slow


def test_an_unreachable_gateway_is_inconclusive(server: FakeServer, tmp_path: Path) -> None:
    async def nowhere(message: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise ConnectionRefusedError("no gateway")
    provider = PrometheusProvider(server.url, "q", 1, CONTEXT,
                                  transport=GatewayTransport(nowhere))
    measured = asyncio.run(provider.sample())
    assert measured.phase == "inconclusive" and "no gateway" in measured.reason


def test_a_name_in_the_tables_hosts_is_reached_at_its_address(
        server: FakeServer, tmp_path: Path) -> None:
    """A cluster without DNS: the controller gives the gateway the Service's address."""
    server.body = vector("0.01")
    port = urlparse(server.url).port
    url = f"http://prom-stable:{port}"
    measured = asyncio.run(through_gateway(
        tmp_path, [url + "/api/v1/query"], lambda t: PrometheusProvider(
            url, "up", 1, CONTEXT, transport=t).sample(), {"prom-stable": "127.0.0.1"}))
    assert measured.phase == "pass", measured
    assert server.hosts[-1] == f"prom-stable:{port}"


def test_a_webhook_is_posted_through_the_gateway(server: FakeServer, tmp_path: Path) -> None:
    hook = server.url + "/judge"
    server.status = 500
    failed = asyncio.run(through_gateway(tmp_path, [hook], lambda t: WebhookProvider(
        hook, {"service": "web"}, transport=t).sample(final=True)))
    assert failed.phase == "fail" and failed.value == 500.0
    method, path, body = server.requests[-1]
    assert (method, path) == ("POST", "/judge")
    assert json.loads(body) == {"service": "web", "final": True}


def test_the_allow_list_is_scheme_host_port_and_path() -> None:
    assert allowed_key("HTTP://Prom:9090/api/v1/query?query=x#f") == \
        "http://prom:9090/api/v1/query"
    assert allowed_key("http://u:p@prom/") == "http://prom/"
    assert parse_table({"version": 1, "listeners": [], "fetch": [
        "http://prom:9090/api/v1/query"]}).version == 1
    with pytest.raises(TableError, match="table.fetch"):
        parse_table({"version": 1, "listeners": [], "fetch": ["file:///etc/passwd"]})


@pytest.fixture
def dead_url() -> str:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
