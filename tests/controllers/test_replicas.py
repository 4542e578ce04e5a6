"""The replica plan: scaling and rolling replacement within surge and availability."""

from __future__ import annotations

from mso.controllers.replicas import (ObservedReplica, RollingParams, StartReplica,
                                      StopReplica, plan, resolve_budget)


def rep(ordinal: int, release: int = 1, ready: bool = True,
        stopping: bool = False) -> ObservedReplica:
    return ObservedReplica(f"web-{ordinal}", ordinal, release, ready, stopping)


def test_starts_missing_replicas_with_lowest_free_ordinals() -> None:
    actions = plan(1, 3, [rep(2)])
    assert actions == [StartReplica(1, 1), StartReplica(3, 1)]


def test_scale_down_removes_not_ready_then_highest_ordinals() -> None:
    actions = plan(1, 1, [rep(1), rep(2), rep(3, ready=False)])
    assert actions == [StopReplica("web-3", "scaled down"), StopReplica("web-2", "scaled down")]


def test_waits_for_dependencies_before_starting() -> None:
    assert plan(1, 2, [], may_start=False) == []


def test_rolling_update_surges_one_and_keeps_all_old_ready() -> None:
    observed = [rep(1), rep(2), rep(3)]
    assert plan(2, 3, observed) == [StartReplica(4, 2)]


def test_rolling_update_stops_one_old_once_new_is_ready() -> None:
    observed = [rep(1), rep(2), rep(3), rep(4, release=2, ready=True)]
    actions = plan(2, 3, observed)
    assert actions == [StopReplica("web-3", "replaced by release 2")]


def test_rolling_update_never_exceeds_surge_while_old_replica_drains() -> None:
    observed = [rep(1), rep(2), rep(3, stopping=True), rep(4, release=2)]
    assert plan(2, 3, observed) == []


def test_rolling_update_with_unready_new_replica_keeps_old_ones() -> None:
    observed = [rep(1), rep(2), rep(3), rep(4, release=2, ready=False)]
    assert plan(2, 3, observed) == []


def test_max_unavailable_allows_stopping_without_surge() -> None:
    params = RollingParams(max_surge=0, max_unavailable=1)
    actions = plan(2, 2, [rep(1), rep(2)], params)
    assert actions == [StopReplica("web-2", "replaced by release 2")]


def test_recreate_stops_everything_before_starting() -> None:
    params = RollingParams(strategy="recreate")
    assert plan(2, 2, [rep(1), rep(2)], params) == [
        StopReplica("web-1", "replaced by release 2 (recreate)"),
        StopReplica("web-2", "replaced by release 2 (recreate)")]
    assert plan(2, 2, [rep(1, stopping=True)], params) == []
    assert plan(2, 2, [], params) == [StartReplica(1, 2), StartReplica(2, 2)]


def test_percent_budgets_round_like_kubernetes() -> None:
    assert resolve_budget("25%", 10, round_up=True) == 3
    assert resolve_budget("25%", 10, round_up=False) == 2
