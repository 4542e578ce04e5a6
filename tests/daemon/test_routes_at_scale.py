"""The daemon rebuilds its route table only when something it is built from changed."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mso.daemon import core
from mso.daemon.core import Daemon
from mso.paths import StatePaths


def make_daemon(tmp_path: Path) -> tuple[Daemon, list[int], dict[str, Any]]:
    d = Daemon(StatePaths(tmp_path / ".mso"))
    built: list[int] = []
    world: dict[str, Any] = {"rollout": None, "replicas": {}}
    d.book = SimpleNamespace(replicas=world["replicas"])  # type: ignore[assignment]
    d.store = SimpleNamespace(  # type: ignore[assignment]
        desired=lambda: {"web": SimpleNamespace(kind="service")})
    d.rollouts = SimpleNamespace(active=lambda name: world["rollout"])  # type: ignore[assignment]

    async def push(table: dict[str, Any]) -> bool:
        return True

    d.proxy = SimpleNamespace(push=push)  # type: ignore[assignment]
    d.app_config = lambda: {"app": "x"}  # type: ignore[method-assign]
    d.route_table = lambda: built.append(1) or {"n": len(built)}  # type: ignore[method-assign]
    return d, built, world


def test_route_table_is_rebuilt_only_after_a_change(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(core.time, "monotonic", lambda: now[0])
    d, built, world = make_daemon(tmp_path)

    async def ticks(n: int) -> None:
        for _ in range(n):
            await d.push_routes()
            now[0] += core.RECONCILE_PERIOD

    asyncio.run(ticks(4))
    assert len(built) == 1  # idle: built once, not twice a second
    d.wake()  # a replica changed state, a manifest was applied, ...
    asyncio.run(ticks(2))
    assert len(built) == 2
    d._draining.add("web-1")  # a drain takes the replica out of the table at once
    asyncio.run(ticks(1))
    assert len(built) == 3
    world["rollout"] = object()  # an active rollout moves weights with time: every tick
    asyncio.run(ticks(3))
    assert len(built) == 6
    world["rollout"] = None
    asyncio.run(ticks(1))
    built.clear()
    world["replicas"]["web-2"] = SimpleNamespace(ready=True,
                                                assume_ready_until=now[0] + 1.2)
    asyncio.run(ticks(4))  # re-adopted replica on probation: every tick until it ends
    assert len(built) == 3
    built.clear()
    asyncio.run(ticks(int(core.ROUTES_REFRESH / core.RECONCILE_PERIOD) + 1))
    assert len(built) == 1  # and a safety-net rebuild every ROUTES_REFRESH


def test_a_failed_push_is_retried_on_the_next_tick(tmp_path: Path) -> None:
    d, built, _ = make_daemon(tmp_path)
    calls = []

    async def failing(table: dict[str, Any]) -> bool:
        calls.append(table)
        raise ConnectionRefusedError("proxy down")

    d.proxy = SimpleNamespace(push=failing)  # type: ignore[assignment]
    d.store = SimpleNamespace(desired=lambda: {},  # type: ignore[assignment]
                              add_event=lambda *a, **k: None)
    asyncio.run(d.push_routes())
    asyncio.run(d.push_routes())
    assert len(calls) == 2


def test_a_replica_leaving_readiness_is_pushed_even_without_a_wake_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transition whose store write failed may not wake the daemon: readiness is part
    of what the table is compared on, so the replica leaves the rotation at the next tick."""
    now = [1000.0]
    monkeypatch.setattr(core.time, "monotonic", lambda: now[0])
    d, built, world = make_daemon(tmp_path)
    replica = SimpleNamespace(ready=True, assume_ready_until=0.0)
    world["replicas"]["web-1"] = replica
    asyncio.run(d.push_routes())
    asyncio.run(d.push_routes())
    assert len(built) == 1
    replica.ready = False  # killed; no wake()
    asyncio.run(d.push_routes())
    assert len(built) == 2
