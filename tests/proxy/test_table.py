"""Route table parsing and validation."""
from __future__ import annotations

from typing import Any

import pytest

from mso.proxy.runtime import plan_listeners
from mso.proxy.table import TableError, parse_table

DOC: dict[str, Any] = {
    "version": 7,
    "listeners": [
        {"name": "gateway", "bind": "127.0.0.1", "port": 8080, "mode": "http",
         "routes": [{"host": None, "path": "/api/orders", "cluster": "orders/http"},
                    {"host": "Shop.Example:8080", "path": "/", "cluster": "web/http"}]},
        {"name": "orders/http", "bind": "127.0.0.1", "port": 40001, "mode": "http",
         "cluster": "orders/http"},
        {"name": "store/tcp", "bind": "127.0.0.1", "port": 40002, "mode": "tcp", "cluster": "web/http"},
        {"name": "metrics", "bind": "127.0.0.1", "port": 8079, "mode": "metrics"},
    ],
    "clusters": {
        "orders/http": {"service": "orders", "balancer": "round_robin", "subsets": {
            "stable": {"weight": 90, "endpoints": [{"id": "orders-1", "address": "127.0.0.1:41234"}]},
            "canary": {"weight": 10, "endpoints": [{"id": "orders-c1", "address": "127.0.0.1:41240"}]},
        }},
        "web/http": {"service": "web", "balancer": "least_request", "subsets": {
            "stable": {"weight": 100, "endpoints": [{"id": "web-1", "address": "[::1]:80"}]}}},
    },
}


def test_architecture_example_parses() -> None:
    t = parse_table(DOC)
    assert t.version == 7
    gw = t.listeners[0]
    assert [r.cluster for r in gw.routes] == ["orders/http", "web/http"]
    assert gw.routes[1].host == "shop.example"  # lowercased, port dropped
    assert t.listeners[1].routes[0].cluster == "orders/http"
    assert t.clusters["orders/http"].subsets[1].weight == 10
    assert t.clusters["web/http"].subsets[0].endpoints[0].host == "::1"


def _mutate(path: list[Any], value: Any) -> dict[str, Any]:
    import copy
    doc = copy.deepcopy(DOC)
    target: Any = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize("path,value,needle", [
    (["version"], "7", "version"),
    (["version"], KeyError, "version"),
    (["listeners", 0, "mode"], "udp", "mode"),
    (["listeners", 0, "port"], 70000, "port"),
    (["listeners", 0, "routes", 0, "cluster"], "nope", "unknown cluster"),
    (["listeners", 0, "routes", 0, "path"], "api", "path"),
    (["listeners", 1, "name"], "gateway", "duplicate"),
    (["listeners", 1, "port"], 8080, "share"),
    (["clusters", "orders/http", "balancer"], "random", "balancer"),
    (["clusters", "orders/http", "subsets", "stable", "weight"], -1, "weight"),
    (["clusters", "orders/http", "subsets", "stable", "endpoints", 0, "address"], "nohost", "host:port"),
    (["clusters", "orders/http", "subsets", "stable", "endpoints", 0, "address"], "h:0", "range"),
])
def test_invalid_tables_name_the_field(path: list[Any], value: Any, needle: str) -> None:
    with pytest.raises(TableError, match=needle):
        parse_table(_mutate(path, value))


def test_listener_plan_keeps_unchanged_sockets() -> None:
    old = {x.name: x for x in parse_table(DOC).listeners}
    new_doc = _mutate(["listeners", 1, "port"], 40009)
    new_doc["listeners"].pop()  # metrics listener removed
    new = {x.name: x for x in parse_table(new_doc).listeners}
    plan = plan_listeners(old, new)
    assert plan.keep == ["gateway", "store/tcp"]
    assert plan.create == ["orders/http"]
    assert sorted(plan.close) == ["metrics", "orders/http"]
