"""Dependency cycles and start order."""

from __future__ import annotations

import pytest

from mso.spec.graph import find_cycle, start_order


def test_no_cycle_in_a_dag() -> None:
    assert find_cycle({"web": ["api", "db"], "api": ["db"], "db": []}) is None


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": ["a"]}, ["a"]),
        ({"a": ["b"], "b": ["a"]}, ["a", "b"]),
        ({"x": ["a"], "a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c"]),
    ],
)
def test_cycles_are_found(edges: dict[str, list[str]], cycle: list[str]) -> None:
    assert find_cycle(edges) == cycle


def test_start_order_puts_dependencies_first() -> None:
    order = start_order({"web": ["api"], "api": ["db", "migrate"], "migrate": ["db"], "db": []})
    assert order.index("db") < order.index("migrate") < order.index("api") < order.index("web")


def test_start_order_refuses_cycles() -> None:
    with pytest.raises(ValueError, match="a -> b -> a"):
        start_order({"a": ["b"], "b": ["a"]})
