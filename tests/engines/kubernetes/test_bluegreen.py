"""Blue/green on Kubernetes (which Deployment runs what, where the traffic goes), and a
canary promotion that resumes after a controller restart."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from mso.controllers.rollouts import SubsetTarget
from mso.engines.kubernetes import naming
from mso.engines.kubernetes.bluegreen import plan
from mso.engines.kubernetes.handoff import rolled, serving_elsewhere
from mso.engines.kubernetes.host import KubeHost, Plan
from mso.engines.kubernetes.kube import Kube
from mso.engines.kubernetes.state import AppSettings
from mso.store.db import Store
from mso.store.records import Desired
from mso.strategies.state import RolloutState

ROLLING_TO_2 = ((1, True), (2, True), (2, False))
STABLE_2 = [SubsetTarget("stable", 2, 3)]  # no rollout active, release 2 desired


def state(promoted_at: float | None = None, strategy: str = "blue_green") -> RolloutState:
    return RolloutState("web", strategy, 1, 2, started=0.0, promoted_at=promoted_at)


def test_before_promotion_the_preview_runs_in_full_and_gets_no_main_traffic() -> None:
    traffic = plan(state(), 3)
    assert traffic is not None
    assert traffic.targets == [SubsetTarget("stable", 1, 3), SubsetTarget("preview", 2, 3)]
    assert traffic.weights == {"stable": 100, "preview": 0}
    assert traffic.preview_listener and not traffic.handoff


def test_promotion_moves_all_traffic_and_keeps_the_old_release_running() -> None:
    traffic = plan(state(promoted_at=10.0), 3)
    assert traffic is not None
    assert traffic.targets == [SubsetTarget("stable", 1, 3), SubsetTarget("preview", 2, 3)]
    assert traffic.weights == {"stable": 0, "preview": 100}
    assert not traffic.preview_listener


def test_after_keep_previous_the_preview_serves_until_stable_is_rolled() -> None:
    traffic = serving_elsewhere(None, STABLE_2, {"preview": (2, 3)}, ROLLING_TO_2)
    assert traffic is not None and traffic.handoff
    assert traffic.targets == [SubsetTarget("stable", 2, 3), SubsetTarget("preview", 2, 3)]
    assert traffic.weights == {"stable": 0, "preview": 100}


def test_once_stable_is_rolled_the_preview_is_no_longer_wanted() -> None:
    assert serving_elsewhere(None, STABLE_2, {"preview": (2, 3)}, ((2, True),) * 3) is None
    assert plan(None, 3) is None


def test_an_abort_leaves_the_preview_of_another_release_to_be_deleted() -> None:
    # desired went back to release 1; `svc-preview` still runs 2: plain targets apply
    assert serving_elsewhere(None, [SubsetTarget("stable", 1, 3)], {"preview": (2, 3)},
                             ROLLING_TO_2) is None


def test_a_canary_is_not_blue_green() -> None:
    assert plan(state(strategy="canary"), 3) is None


def test_stable_is_rolled_only_when_every_pod_is_ready_on_the_release() -> None:
    assert rolled(((2, True), (2, True)), 2, 2)
    assert not rolled(((2, True), (1, True)), 2, 2)
    assert not rolled(((2, True), (2, False)), 2, 2)
    assert not rolled(((2, True),), 2, 2)


def _host_with_promoting_canary(tmp_path: Path) -> KubeHost:
    store = Store(tmp_path / "k.db")
    store.set_desired(Desired("web", "service", 2, 2, 2))
    store.set_rollout("web", RolloutState("web", "canary", 1, 2, started=0.0, weight=100,
                                          promoting=True).to_json())
    settings = AppSettings("app", "ns", None, None, 8080, [], str(tmp_path), "img", "1.20")
    return KubeHost(store, cast(Kube, None), settings)


def test_a_restarted_controller_does_not_move_a_promoted_stable_back(tmp_path: Path) -> None:
    host = _host_with_promoting_canary(tmp_path)
    ready = {("web", "canary"): 2}
    targets, weights = host._promotion("web", 2, [], {}, ready, stable_now=2)
    assert SubsetTarget("stable", 2, 2) in targets  # not back to release 1
    assert weights == {"stable": 0, "canary": 100}


def test_a_promotion_keeps_stable_until_the_traffic_has_moved(tmp_path: Path) -> None:
    host = _host_with_promoting_canary(tmp_path)
    targets, _ = host._promotion("web", 2, [], {}, {("web", "canary"): 2}, stable_now=1)
    assert SubsetTarget("stable", 1, 2) in targets


def test_a_plan_made_while_a_deploy_began_recording_is_not_applied(tmp_path: Path) -> None:
    """The controller plans from desired state; if a deploy took the store's hold meanwhile,
    the plan may pair a new release with no rollout yet, so it is dropped."""
    host = _host_with_promoting_canary(tmp_path)
    applied: list[object] = []
    planned = Plan(apply=[{"kind": "Deployment", "metadata": {"name": "web"}}])
    host.plan = lambda: planned  # type: ignore[method-assign]
    host.apply = applied.append  # type: ignore[method-assign]
    host.push_table = lambda *a, **k: True  # type: ignore[method-assign]
    assert host.reconcile(lambda: False) is not planned and applied == []
    assert host.reconcile(lambda: True) is planned and applied == planned.apply


def _stable_pod(release: int, terminating: bool = False) -> dict[str, object]:
    meta: dict[str, object] = {"labels": {naming.COMPONENT: "service", naming.SERVICE: "web",
                                          naming.SUBSET: "stable",
                                          naming.RELEASE: str(release)}}
    if terminating:
        meta["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    return {"metadata": meta,
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def test_a_terminating_pod_of_the_old_release_still_counts_until_it_is_gone(
        tmp_path: Path) -> None:
    # kube-proxy may route to a terminating pod until its rules catch up: a hand-off
    # moving traffic back to `svc`, or a rollout waiting for stable, must wait for it
    host = _host_with_promoting_canary(tmp_path)
    pods = [_stable_pod(2), _stable_pod(2), _stable_pod(1, terminating=True)]
    host.pods = lambda service=None: pods  # type: ignore[method-assign,misc]
    _, stable = host._observe()
    assert not rolled(tuple(stable["web"]), 2, 2)
    members = host.members("web")
    assert [(m.release, m.ready, m.stopping) for m in members][-1] == (1, False, False)
    pods.pop()
    _, stable = host._observe()
    assert rolled(tuple(stable["web"]), 2, 2)
