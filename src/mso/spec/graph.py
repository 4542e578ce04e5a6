"""Dependency graph helpers (pure): cycle detection and start order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["find_cycle", "start_order"]


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a list of nodes (`a` depends on `b` ... depends on `a`), or None.

    Deterministic: nodes are visited in mapping order, so the reported cycle is stable.
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in edges.get(node, ()):
            if state.get(dep) == 1:
                return path[path.index(dep) :]
            if dep not in state:
                found = visit(dep)
                if found is not None:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in edges:
        if node not in state:
            found = visit(node)
            if found is not None:
                return found
    return None


def start_order(edges: Mapping[str, Sequence[str]]) -> list[str]:
    """Nodes with dependencies first (topological order); ValueError on a cycle."""
    cycle = find_cycle(edges)
    if cycle is not None:
        raise ValueError("dependency cycle: " + " -> ".join([*cycle, cycle[0]]))
    order: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        if node in done:
            return
        done.add(node)
        for dep in edges.get(node, ()):
            visit(dep)
        order.append(node)

    for node in edges:
        visit(node)
    return order
