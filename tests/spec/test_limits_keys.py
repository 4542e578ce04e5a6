"""The limits at the edge in the manifest (`routes[].rate_limit`, `routes[].max_body_size`,
`gateway.max_connections_per_client`): their forms, errors at file:line, and their place in
the route table the proxy reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mso.controllers.routing import RouteLimits, RouteView, ServiceRouting, build_table
from mso.proxy.table import parse_table
from mso.spec.errors import ManifestError
from mso.spec.load import load_manifest

BASE = ("app: t\nservices:\n  web: {run: [python3, app.py], ports: {http: 8000}}\n"
        "routes:\n  - path: /\n    service: web\n")


def load(tmp_path: Path, extra: str, gateway: str = "") -> Any:
    (tmp_path / "mso.yaml").write_text(BASE + extra + gateway)
    return load_manifest(tmp_path / "mso.yaml", {}).manifest


@pytest.mark.parametrize("rate, per_second, burst", [
    ("100/s", 100.0, 100), ("600/m", 10.0, 10), ("1/m", 1 / 60, 1), ("36/h", 0.01, 1),
    ("2.5", 2.5, 3), ("'0.5/sec'", 0.5, 1)])
def test_rate_forms_and_the_default_burst(tmp_path: Path, rate: str, per_second: float,
                                          burst: int) -> None:
    route = load(tmp_path, f"    rate_limit: {{rate: {rate}}}\n").routes[0]
    assert route.rate_limit.rate == pytest.approx(per_second)
    assert route.rate_limit.bucket_size() == burst and route.rate_limit.header() == ""


def test_limits_reach_the_proxy(tmp_path: Path) -> None:
    m = load(tmp_path, "    rate_limit: {rate: 10/s, burst: 5, by: 'header:X-Api-Key'}\n"
                       "    max_body_size: 1Mi\n",
             "gateway: {port: 8080, max_connections_per_client: 20}\n")
    route = m.routes[0]
    limits = RouteLimits.of(route.model_dump(mode="json"))
    assert limits == RouteLimits(10.0, 5, "X-Api-Key", 1 << 20)
    raw = build_table(bind="127.0.0.1", gateway_port=8080, metrics_port=None,
                      routes=[RouteView("/", None, "web", "http", limits)],
                      services=[ServiceRouting("web", {"http": ("http", 20000)})],
                      max_client_connections=m.gateway.max_connections_per_client)
    table = parse_table({**raw, "version": 1})
    gw = table.listeners[0]
    assert gw.max_client_connections == 20
    assert gw.routes[0].rate_limit is not None and gw.routes[0].rate_limit.burst == 5
    assert gw.routes[0].max_body == 1 << 20
    # A route without limits adds nothing to the table.
    plain = build_table(bind="127.0.0.1", gateway_port=8080, metrics_port=None,
                        routes=[RouteView("/", None, "web", "http")],
                        services=[ServiceRouting("web", {"http": ("http", 20000)})])
    assert set(plain["listeners"][0]["routes"][0]) == {"host", "path", "cluster"}
    assert "max_client_connections" not in plain["listeners"][0]


@pytest.mark.parametrize("extra, field, words", [
    ("    rate_limit: {rate: 100/d}\n", "routes.0.rate_limit.rate", "such as 100/s"),
    ("    rate_limit: {rate: 0}\n", "routes.0.rate_limit.rate", "above 0"),
    ("    rate_limit: {rate: 1/s, burst: 0}\n", "routes.0.rate_limit.burst", ""),
    ("    rate_limit: {rate: 1/s, by: 'cookie:x'}\n", "routes.0.rate_limit.by", "header:NAME"),
    ("    rate_limit: {rate: 1/s, by: 'header:a b'}\n", "routes.0.rate_limit.by", "header:NAME"),
    ("    rate_limit: {burst: 2}\n", "routes.0.rate_limit.rate", ""),
    ("    max_body_size: lots\n", "routes.0.max_body_size", "not a size"),
])
def test_mistakes_are_reported_at_their_line(tmp_path: Path, extra: str, field: str,
                                             words: str) -> None:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, extra)
    err = info.value.errors[0]
    assert (err.line, err.field) == (7, field)
    assert words in err.message


def test_connection_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, "", "gateway: {max_connections_per_client: 0}\n")
    assert info.value.errors[0].field == "gateway.max_connections_per_client"
