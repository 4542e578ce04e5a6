"""Balancer unit tests: exact weighted splits, least request, outlier ejection, budget."""
from __future__ import annotations

from collections import Counter

import pytest

from mso.proxy.balancer import ClusterState, RetryBudget, build_cluster
from mso.proxy.metrics import Registry
from mso.proxy.table import parse_table


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cluster(weights: dict[str, int], per_subset: int = 1, balancer: str = "round_robin",
            clock: FakeClock | None = None, prev: ClusterState | None = None,
            **extra: object) -> ClusterState:
    raw = {"version": 1, "listeners": [], "clusters": {"c": {
        "balancer": balancer, **extra,
        "subsets": {s: {"weight": w, "endpoints": [
            {"id": f"{s}-{i}", "address": f"127.0.0.1:{1000 + i}"} for i in range(per_subset)]}
            for s, w in weights.items()}}}}
    spec = parse_table(raw).clusters["c"]
    previous = {(e.id, e.host, e.port): e for e in prev.endpoints} if prev else {}
    return build_cluster(spec, previous, Registry(), clock or FakeClock())


def split(c: ClusterState, n: int) -> Counter[str]:
    picks: Counter[str] = Counter()
    for _ in range(n):
        ep = c.pick()
        assert ep is not None
        picks[ep.subset] += 1
    return picks


@pytest.mark.parametrize("stable,canary", [(90, 10), (50, 50), (1, 99)])
def test_weighted_split_is_exact_within_one_percent(stable: int, canary: int) -> None:
    picks = split(cluster({"stable": stable, "canary": canary}, per_subset=3), 10_000)
    assert abs(picks["canary"] - 10_000 * canary / 100) <= 100
    assert picks["stable"] + picks["canary"] == 10_000


def test_split_is_exact_in_every_window() -> None:
    c = cluster({"stable": 90, "canary": 10})
    for _ in range(50):
        assert split(c, 10)["canary"] == 1


def test_weight_change_takes_effect_immediately() -> None:
    c1 = cluster({"stable": 100, "canary": 0})
    assert split(c1, 100)["canary"] == 0
    c2 = cluster({"stable": 50, "canary": 50}, prev=c1)
    assert split(c2, 10)["canary"] == 5


def test_pinned_subset_wins_when_it_has_endpoints() -> None:
    c = cluster({"stable": 100, "canary": 0})
    for _ in range(20):
        ep = c.pick(pin="canary")
        assert ep is not None and ep.subset == "canary"
    ep = c.pick(pin="missing")
    assert ep is not None and ep.subset == "stable"


def test_pin_falls_back_to_weights_when_subset_is_drained() -> None:
    c = cluster({"stable": 100, "canary": 0})
    for e in c.by_subset["canary"].endpoints:
        c.set_draining(e)
    ep = c.pick(pin="canary")
    assert ep is not None and ep.subset == "stable"


def test_round_robin_cycles_endpoints() -> None:
    c = cluster({"s": 1}, per_subset=3)
    ids = [c.pick().id for _ in range(6)]  # type: ignore[union-attr]
    assert ids == ["s-0", "s-1", "s-2", "s-0", "s-1", "s-2"]


def test_least_request_prefers_fewer_inflight() -> None:
    c = cluster({"s": 1}, per_subset=2, balancer="least_request")
    c.endpoints[0].inflight = 10
    assert all(c.pick().id == "s-1" for _ in range(50))  # type: ignore[union-attr]


def test_least_request_never_picks_the_busiest_of_three() -> None:
    c = cluster({"s": 1}, per_subset=3, balancer="least_request")
    c.endpoints[2].inflight = 5
    c.endpoints[0].inflight = 1
    picks = Counter(c.pick().id for _ in range(300))  # type: ignore[union-attr]
    assert picks["s-2"] == 0 and picks["s-1"] > 0


def test_exclude_avoids_tried_endpoint_when_another_exists() -> None:
    c = cluster({"s": 1}, per_subset=2)
    assert all(c.pick(exclude=("s-0",)).id == "s-1" for _ in range(10))  # type: ignore[union-attr]
    single = cluster({"s": 1})
    assert single.pick(exclude=("s-0",)).id == "s-0"  # type: ignore[union-attr]


def test_drained_endpoint_gets_no_new_requests() -> None:
    c = cluster({"s": 1}, per_subset=2)
    c.set_draining(c.endpoints[0])
    assert {c.pick().id for _ in range(10)} == {"s-1"}  # type: ignore[union-attr]
    c.set_draining(c.endpoints[1])
    assert c.pick() is None


def test_outlier_ejected_after_consecutive_failures_then_returns() -> None:
    clock = FakeClock()
    c = cluster({"s": 1}, per_subset=2, clock=clock)
    bad = c.endpoints[0]
    assert [c.record_failure(bad) for _ in range(5)] == [False] * 4 + [True]
    assert {c.pick().id for _ in range(10)} == {"s-1"}  # type: ignore[union-attr]
    clock.now += 10.01
    assert "s-0" in {c.pick().id for _ in range(10)}  # type: ignore[union-attr]


def test_ejection_time_grows_with_repeated_ejections() -> None:
    clock = FakeClock()
    c = cluster({"s": 1}, per_subset=2, clock=clock)
    bad = c.endpoints[0]
    for expected in (10.0, 20.0, 40.0):
        for _ in range(5):
            c.record_failure(bad)
        assert bad.ejected_until - clock.now == pytest.approx(expected)
        clock.now = bad.ejected_until + 0.01


def test_success_resets_consecutive_failures() -> None:
    c = cluster({"s": 1}, per_subset=2)
    bad = c.endpoints[0]
    for _ in range(4):
        c.record_failure(bad)
    c.record_success(bad)
    assert not any(c.record_failure(bad) for _ in range(4))


def test_at_most_half_the_endpoints_are_ejected() -> None:
    c = cluster({"s": 1}, per_subset=4)
    ejected = [any(c.record_failure(e) for _ in range(5)) for e in c.endpoints]
    assert ejected == [True, True, False, False]
    lone = cluster({"s": 1})
    assert not any(lone.record_failure(lone.endpoints[0]) for _ in range(20))


def test_retry_budget_allows_about_twenty_percent() -> None:
    b = RetryBudget(ratio=0.2, initial=0.0)
    granted = 0
    for _ in range(1000):
        b.earn()
        granted += b.try_spend()
    assert 195 <= granted <= 200
    assert not b.try_spend()


def test_endpoint_state_survives_table_change() -> None:
    c1 = cluster({"s": 1}, per_subset=2)
    c1.endpoints[0].inflight = 3
    c2 = cluster({"s": 1}, per_subset=2, prev=c1)
    assert c2.endpoints[0] is c1.endpoints[0] and c2.endpoints[0].inflight == 3
