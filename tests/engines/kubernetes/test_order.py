"""Kubernetes orders a service's first start by `depends_on` and jobs' `before:` (the
services of later waves are held back), and runs a failed Job again (pure parts; the
conformance scenarios run them on the lab)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mso.engines.kubernetes import naming, state
from mso.engines.kubernetes.deploy import _job_failed, held_back, waves
from mso.spec.load import load_manifest
from mso.store.db import Store
from mso.store.records import Desired

SHOP = Path(__file__).resolve().parents[3] / "examples" / "shop" / "mso.yaml"


class _Kube:
    def __init__(self, deployed: list[str]) -> None:
        self.deployed = deployed

    def list(self, api: str, kind: str, namespace: str, labels: dict[str, str]
             ) -> list[dict[str, Any]]:
        assert kind == "Deployment"
        return [{"metadata": {"labels": {naming.SERVICE: n}}} for n in self.deployed]


def _host(tmp_path: Path, deployed: list[str]) -> Any:
    store = Store(tmp_path / "k.db")
    manifest = load_manifest(SHOP).manifest
    for name in manifest.services:
        store.set_desired(Desired(name, "service", 1, 1, 1))
    for name in manifest.jobs:
        store.set_desired(Desired(name, "job", 1, 1, 1))
    return SimpleNamespace(kube=_Kube(deployed), store=store,
                           settings=SimpleNamespace(namespace="ns", app="shop")), manifest


def test_a_first_deploy_holds_back_every_service_with_something_to_wait_for(
        tmp_path: Path) -> None:
    host, manifest = _host(tmp_path, [])
    held = held_back(host, waves(manifest))
    assert held == {"web", "orders", "inventory", "payments"}  # kvstore waits for nothing


def test_an_update_of_running_services_holds_back_only_the_new_one(tmp_path: Path) -> None:
    host, manifest = _host(tmp_path, ["kvstore", "inventory", "payments", "orders"])
    assert held_back(host, waves(manifest)) == {"web"}


def test_holding_is_kept_in_the_store_for_the_controller(tmp_path: Path) -> None:
    store = Store(tmp_path / "k.db")
    state.set_holding(store, {"web", "orders"})
    assert state.holding(store) == {"web", "orders"}
    state.set_holding(store, set())
    assert state.holding(store) == set()


def test_a_failed_job_is_recognised_to_be_run_again() -> None:
    assert _job_failed({"status": {"failed": 1}})
    assert _job_failed({"status": {"conditions": [{"type": "Failed", "status": "True",
                                                   "reason": "DeadlineExceeded"}]}})
    assert not _job_failed({"status": {"active": 1}})
    assert not _job_failed({"status": {"succeeded": 1}})
