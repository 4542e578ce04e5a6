"""The deploy hold: while a command records a new desired release and begins its rollout,
the controller does nothing, so it never sees the release without its rollout."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from mso.engines.swarm import state
from mso.engines.swarm.controller import SwarmController
from mso.engines.swarm.state import AppConfig, SwarmPaths
from mso.store.db import Store


def test_hold_is_held_only_inside_and_only_while_fresh(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert not state.held(store, 0.0)
    with state.hold(store):
        since = json.loads(store.get_meta(state.HOLD_KEY) or "{}")["ts"]
        assert state.held(store, since + 1)
        assert not state.held(store, since + state.HOLD_TTL + 1)  # its command died
    assert not state.held(store, since + 1)


def test_a_hold_taken_over_by_another_command_is_left_to_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with state.hold(store):
        other = json.dumps({"ts": 1e12, "id": "other"})
        store.set_meta(state.HOLD_KEY, other)
    assert store.get_meta(state.HOLD_KEY) == other


def test_a_garbled_hold_does_not_stop_the_controller(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    store.set_meta(state.HOLD_KEY, "not json")
    assert not state.held(store, 0.0)


class _UntouchableApi:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the controller called the Docker API ({name}) during a hold")


def test_controller_does_not_reconcile_while_a_command_holds_the_store(tmp_path: Path) -> None:
    paths = SwarmPaths(tmp_path / ".mso")
    controller = SwarmController(paths, api=_UntouchableApi())  # type: ignore[arg-type]
    AppConfig("app", str(tmp_path / "mso.yaml"), str(tmp_path), "app_net", 8080,
              "img").save(controller.store)
    with state.hold(controller.store):
        asyncio.run(controller.reconcile_once())
    assert state.get_json(controller.store, state.STATUS_KEY, {}) == {}
