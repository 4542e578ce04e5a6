"""The Swarm controller waits while a command holds the store (a deploy between recording
its release and beginning its rollout)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from mso.engines.swarm import state
from mso.engines.swarm.controller import SwarmController
from mso.engines.swarm.state import AppConfig, SwarmPaths
from mso.store.hold import hold


class _UntouchableApi:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the controller called the Docker API ({name}) during a hold")


def test_controller_does_not_reconcile_while_a_command_holds_the_store(tmp_path: Path) -> None:
    paths = SwarmPaths(tmp_path / ".mso")
    controller = SwarmController(paths, api=_UntouchableApi())  # type: ignore[arg-type]
    AppConfig("app", str(tmp_path / "mso.yaml"), str(tmp_path), "app_net", 8080,
              "img").save(controller.store)
    with hold(controller.store):
        asyncio.run(controller.reconcile_once())
    assert state.get_json(controller.store, state.STATUS_KEY, {}) == {}


class _ApiWhereADeployStartsDuringObservation:
    """Observation succeeds, but a deploy takes the hold (and records a release) while the
    controller waits for the task list."""

    api_version = "1.41"

    def __init__(self, store: Any) -> None:
        self.store = store

    def ensure_network(self, app: str, network: str) -> str:
        return "net-id"

    def services(self, app: str) -> list[dict[str, Any]]:
        return []

    def tasks(self, ids: list[str]) -> list[dict[str, Any]]:
        self.hold = hold(self.store)
        self.hold.__enter__()
        return []

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the controller acted ({name}) on a store a deploy holds")


def test_a_tick_under_way_when_a_deploy_takes_the_hold_acts_on_nothing(tmp_path: Path) -> None:
    paths = SwarmPaths(tmp_path / ".mso")
    controller = SwarmController(paths, api=_UntouchableApi())  # type: ignore[arg-type]
    controller.api = _ApiWhereADeployStartsDuringObservation(  # type: ignore[assignment]
        controller.store)
    AppConfig("app", str(tmp_path / "mso.yaml"), str(tmp_path), "app_net", 8080,
              "img").save(controller.store)
    asyncio.run(controller.reconcile_once())
    assert state.get_json(controller.store, state.STATUS_KEY, {}) == {}
