"""The autoscaler's decision (HPA v2's algorithm on mso's figures) and the loop feeding it,
with an injected clock: bounds, tolerance, stabilization windows, step limits, no
flapping on noisy load, replicas still starting, proportional split during a rollout."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from mso.controllers.autoscale import (Autoscaler, History, Observation, Policy, Rule, cpu_cores,
                                       measure, plan)
from mso.controllers.rollouts import Member, RolloutController
from mso.store.db import Store
from mso.store.records import Desired

RPS = Policy(min=1, max=10, targets={"rps": 100.0})


def _run(policy: Policy, loads: list[float], start: int = 1, dt: float = 1.0,
         ready_lag: bool = False) -> list[int]:
    """Replica counts after each second of `loads` (total req/s); replicas are ready at once."""
    history, replicas, out = History(), start, []
    for i, load in enumerate(loads):
        decision = plan(policy, Observation(replicas, replicas, {"rps": load}), history, i * dt)
        history, replicas = decision.history, decision.desired
        out.append(replicas)
    return out


def test_a_load_step_scales_up_at_once_to_what_the_load_needs() -> None:
    decision = plan(RPS, Observation(1, 1, {"rps": 400.0}), History(), 0.0)
    assert (decision.current, decision.desired) == (1, 4)
    assert decision.readings[0].value == 400.0 and decision.readings[0].replicas == 4
    assert "rps 400" in decision.reason


def test_within_the_tolerance_nothing_changes() -> None:
    for load in (361.0, 400.0, 439.0):
        assert plan(RPS, Observation(4, 4, {"rps": load}), History(), 0.0).desired == 4
    assert plan(RPS, Observation(4, 4, {"rps": 460.0}), History(), 0.0).desired == 5


def test_bounds_hold_and_a_count_outside_them_is_brought_back() -> None:
    policy = Policy(min=2, max=5, targets={"rps": 100.0})
    assert plan(policy, Observation(2, 2, {"rps": 5000.0}), History(), 0.0).desired == 5
    up = plan(policy, Observation(1, 1, {}), History(), 0.0)
    assert up.desired == 2 and up.reason == "raised to min (2)"
    down = plan(policy, Observation(8, 8, {"rps": 800.0}), History(), 0.0)
    assert down.desired == 5 and down.reason == "lowered to max (5)"
    # a fresh autoscaler (or a restarted daemon) removes nothing before a whole window
    assert plan(policy, Observation(3, 3, {"rps": 0.0}), History(), 1000.0).desired == 3


def test_scale_down_waits_for_the_window_then_takes_its_highest_recommendation() -> None:
    policy = Policy(min=1, max=10, targets={"rps": 100.0}, down=Rule(30.0, "100%"))
    counts = _run(policy, [800.0] * 5 + [300.0] * 10 + [50.0] * 60, start=8)
    assert counts[:5] == [8] * 5
    assert set(counts[5:34]) == {8}  # 800 req/s was recommended within the last 30 s
    assert counts[34] == 3  # the highest recommendation left in the window: 300 req/s
    assert counts[-1] == 1


def test_the_default_scale_down_window_is_five_minutes() -> None:
    counts = _run(RPS, [400.0] + [0.0] * 400, start=4)
    assert counts[299] == 4 and counts[300] == 1


def test_max_step_limits_each_period() -> None:
    policy = Policy(min=1, max=50, targets={"rps": 100.0}, up=Rule(0.0, 2, period=10.0))
    counts = _run(policy, [4000.0] * 25)
    assert counts[0] == 3 and counts[9] == 3 and counts[10] == 5 and counts[20] == 7
    # HPA's default: the larger of 4 replicas and 100% per 15 s.
    default = _run(Policy(min=1, max=50, targets={"rps": 100.0}), [4000.0] * 16)
    assert default[0] == 5 and default[14] == 5 and default[15] == 10


def test_noisy_steady_load_does_not_flap() -> None:
    rng = random.Random(19)
    loads = [400.0 * rng.uniform(0.8, 1.2) for _ in range(120)]
    counts = _run(Policy(min=1, max=10, targets={"rps": 80.0}), [20.0] + loads)
    changes = [(a, b) for a, b in zip(counts, counts[1:]) if a != b]
    assert all(b > a for a, b in changes) and len(changes) <= 2
    assert 5 <= counts[-1] <= 6


def test_replicas_still_starting_do_not_make_it_scale_down() -> None:
    decision = plan(RPS, Observation(4, 1, {"rps": 120.0}), History(), 0.0)
    assert decision.desired == 4 and "not ready" in decision.reason


def test_no_figures_means_no_change() -> None:
    decision = plan(RPS, Observation(3, 0, {"rps": 100.0}), History(), 0.0)
    assert decision.desired == 3 and decision.readings == ()


def test_the_largest_count_any_target_asks_for_wins() -> None:
    policy = Policy(min=1, max=20, targets={"rps": 100.0, "inflight": 2.0, "p99_ms": 100.0,
                                            "cpu": 0.5})
    decision = plan(policy, Observation(2, 2, {"rps": 150.0, "inflight": 12.0, "p99_ms": 150.0,
                                               "cpu": 1.4}), History(), 0.0)
    asks = {r.metric: r.replicas for r in decision.readings}
    assert asks == {"rps": 2, "inflight": 6, "p99_ms": 3, "cpu": 3}
    assert decision.desired == 6 and decision.reason.startswith("inflight 6 ")


def test_during_a_canary_the_canary_follows_the_autoscaled_count_by_its_weight(
        tmp_path: Path) -> None:
    # The autoscaler sets the service's count; the rollout controller keeps the stable
    # subset at that count and gives the canary ceil(count x weight).
    store = Store(tmp_path / "r.db")
    model = {"ports": {"http": 8000},
             "rollout": {"strategy": "canary", "steps": [{"set_weight": 20}, {"pause": {}}]}}
    for n in (1, 2):
        store.add_release("web", f"h{n}", {"kind": "service", "model": model}, {}, "t", "x")
    store.set_desired(Desired("web", "service", 2, 3, 1))
    controller = RolloutController(_RolloutHost(store))
    controller.begin("web", 1, 2)
    for _ in range(3):  # the canary is ready: its step's weight is set
        asyncio.run(controller.tick())
    for count, canary in ((3, 1), (10, 2), (12, 3)):
        targets, weights = controller.targets("web", Desired("web", "service", 2, count, 1))
        assert {t.subset: t.replicas for t in targets} == {"stable": count, "canary": canary}
        assert weights == {"stable": 80, "canary": 20}


class _RolloutHost:
    def __init__(self, store: Store) -> None:
        self.store = store

    def members(self, service: str) -> list[Member]:
        return [Member("stable", 1, True)] * 3 + [Member("canary", 2, True)]

    async def metrics(self) -> dict[str, Any]:
        return {}

    def relabel(self, service: str, mapping: dict[str, str]) -> None:
        pass

    def wake(self) -> None:
        pass


def test_policy_from_the_manifest_has_hpa_defaults() -> None:
    policy = Policy.from_spec({"min": 2, "max": 9, "target_p99_latency": 0.25,
                               "behavior": {"scale_down": {"stabilization": 10.0}}})
    assert policy.targets == {"p99_ms": 250.0}
    assert policy.up == Rule(0.0, "100%", 15.0, floor=4)
    assert policy.down == Rule(10.0, "100%", 15.0)
    assert Policy.from_spec({"max": 3, "target_cpu_per_replica": 0.5}).down.stabilization == 300.0


def _snap(requests: int, inflight: int, counts: list[int]) -> dict[str, Any]:
    return {"clusters": {"web/http": {"subsets": {"stable": {"endpoints": {"web-1": {
        "requests": requests, "responses": {"2xx": requests}, "inflight": inflight,
        "latency_buckets_ms": [10.0, 100.0], "latency_counts": counts}}}}},
        "api/http": {"subsets": {"stable": {"endpoints": {"api-1": {
            "requests": 999, "inflight": 50}}}}}}}


def test_measure_diffs_the_snapshots_of_the_service_only() -> None:
    figures = measure([(0.0, _snap(100, 0, [100, 0, 0])), (1.0, _snap(150, 4, [120, 30, 0])),
                       (2.0, _snap(300, 6, [200, 100, 0]))], "web")
    assert figures["rps"] == 100.0 and figures["inflight"] == 5.0
    assert 90.0 < figures["p99_ms"] <= 100.0
    assert measure([(0.0, _snap(1, 0, [1, 0, 0]))], "web") == {}
    assert cpu_cores((0.0, {"a": 1.0, "b": 5.0}), (2.0, {"a": 2.0, "c": 9.0})) == 0.5


class FakeHost:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.snapshot: dict[str, Any] = _snap(0, 0, [0, 0, 0])
        self.ready = 1
        self.cpu: dict[str, float] = {"web-1": 0.0}

    async def metrics(self) -> dict[str, Any]:
        return self.snapshot

    def serving(self, service: str) -> int:
        return self.ready

    def cpu_seconds(self, service: str) -> dict[str, float] | None:
        return self.cpu

    def set_replicas(self, service: str, replicas: int) -> None:
        want = self.store.desired()[service]
        self.store.set_desired(Desired(service, "service", want.release, replicas,
                                       want.manifest_replicas))
        self.ready = replicas


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s.db")
    store.set_desired(Desired("web", "service", 1, 1, 1))
    return store


def test_the_loop_scales_through_the_host_and_records_the_numbers(store: Store) -> None:
    host, clock = FakeHost(store), Clock()
    spec = {"min": 1, "max": 10, "target_rps_per_replica": 100.0,
            "target_cpu_per_replica": 0.5}
    scaler = Autoscaler(host, lambda: {"web": spec}, clock=clock)
    total = 0
    for second in range(4):
        total += 300
        host.snapshot = _snap(total, 3, [total, 0, 0])
        host.cpu = {"web-1": 0.2 * second}
        asyncio.run(scaler.tick())
        clock.now += 0.5
        asyncio.run(scaler.tick())  # not due yet: the interval is 1 s
        clock.now += 0.5
    assert store.desired()["web"].replicas == 3
    events = [e for e in store.events() if e.type == "service.autoscaled"]
    assert len(events) == 1
    assert events[0].message.startswith("1 -> 3 replicas: rps 300")
    assert events[0].data["desired"] == 3
    assert {m["metric"] for m in events[0].data["metrics"]} == {"rps", "cpu"}
    state = scaler.state("web")
    assert state is not None and state["current"] == 3


def test_no_figures_from_the_proxy_changes_nothing(store: Store) -> None:
    class Silent(FakeHost):
        async def metrics(self) -> dict[str, Any]:
            raise OSError("the proxy is restarting")

    host, clock = Silent(store), Clock()
    scaler = Autoscaler(host, lambda: {"web": {"min": 2, "max": 4, "target_rps_per_replica": 1.0}},
                        clock=clock)
    for _ in range(3):
        asyncio.run(scaler.tick())
        clock.now += 1.0
    # Only the bounds act without figures: below min it is raised, and that is all.
    assert store.desired()["web"].replicas == 2
    assert [e.message for e in store.events() if e.type == "service.autoscaled"] == [
        "1 -> 2 replicas: raised to min (2)"]
