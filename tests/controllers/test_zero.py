"""Scale to zero's decisions with an injected clock: idleness sends a service to zero (and
nothing else does), a request waiting at zero brings one replica back, each with an event
carrying its numbers; the manifest's `min: 0` checks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mso.controllers.autoscale import Autoscaler, History, Observation, Policy, plan
from mso.controllers.zero import (IdleClock, ZeroPolicy, activity, goes_to_zero, hold_table,
                                  services_waiting, watch_held)
from mso.spec.errors import ManifestError
from mso.spec.load import load_manifest
from mso.spec.support import check
from mso.store.db import Store
from mso.store.records import Desired

ZERO = {"min": 0, "max": 3, "target_rps_per_replica": 50.0, "idle": 300.0}


def _snap(requests: int, inflight: int = 0) -> dict[str, Any]:
    return {"clusters": {
        "web/http": {"subsets": {"stable": {"endpoints": {"web-1": {
            "requests": requests, "inflight": inflight}}}}},
        "other/http": {"subsets": {"stable": {"endpoints": {"o-1": {
            "requests": 7 * requests + 1, "inflight": 3}}}}}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Host:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.snapshot: dict[str, Any] = _snap(0)
        self.ready = 1
        self.asked: list[int] = []

    async def metrics(self) -> dict[str, Any]:
        return self.snapshot

    def serving(self, service: str) -> int:
        return self.ready

    def cpu_seconds(self, service: str) -> dict[str, float] | None:
        return None

    def set_replicas(self, service: str, replicas: int) -> None:
        want = self.store.desired()[service]
        self.store.set_desired(Desired(service, "service", want.release, replicas,
                                       want.manifest_replicas))
        self.asked.append(replicas)
        self.ready = replicas


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s.db")
    store.set_desired(Desired("web", "service", 1, 1, 1))
    return store


def test_the_idle_clock_counts_from_the_last_request_of_the_service_only() -> None:
    idle = IdleClock()
    assert idle.observe("web", activity(_snap(5), "web"), 0.0) == 0.0  # first look: busy now
    assert idle.observe("web", activity(_snap(5), "web"), 60.0) == 60.0
    assert idle.observe("web", None, 90.0) == 90.0  # no SNAPSHOT: the clock goes on
    assert idle.observe("web", activity(_snap(6), "web"), 120.0) == 0.0  # a request
    assert idle.observe("web", activity(_snap(6, inflight=1), "web"), 500.0) == 0.0  # a long one
    assert idle.observe("web", activity(_snap(6), "web"), 530.0) == 30.0
    idle.touch("web", 600.0)  # a request waiting at zero
    assert idle.observe("web", activity(_snap(6), "web"), 610.0) == 10.0
    assert activity(_snap(6, 2), "web") == (6, 2)  # "other" is not counted


def test_the_idle_decision() -> None:
    policy = ZeroPolicy(idle=300.0)
    assert not goes_to_zero(policy, 1, 299.9)
    assert goes_to_zero(policy, 2, 300.0)
    assert not goes_to_zero(policy, 0, 10_000.0)  # already there


def test_the_metrics_never_ask_for_zero_replicas() -> None:
    policy = Policy.from_spec(ZERO)
    assert policy.min == 1
    history = History()
    desired = 2
    for second in range(2000):  # 0 req/s for over half an hour
        decision = plan(policy, Observation(desired, desired, {"rps": 0.0}), history,
                        float(second))
        history, desired = decision.history, decision.desired
    assert desired == 1


def test_after_idle_it_goes_to_zero_with_an_event_and_stays_there(store: Store) -> None:
    host, clock = Host(store), Clock()
    scaler = Autoscaler(host, lambda: {"web": ZERO}, clock=clock)
    host.snapshot = _snap(10)
    for _ in range(299):
        asyncio.run(scaler.tick())
        clock.now += 1.0
    assert host.asked == []  # 299 s without a request: not yet
    host.snapshot = _snap(11)  # one request: the idle time starts again
    asyncio.run(scaler.tick())
    for _ in range(300):
        clock.now += 1.0
        asyncio.run(scaler.tick())
    assert host.asked == [0] and store.desired()["web"].replicas == 0
    events = [e for e in store.events() if e.type == "service.autoscaled"]
    assert [e.message for e in events] == [
        "1 -> 0 replicas: idle: no request for 5m00s (idle 5m00s)"]
    assert events[0].data["current"] == 1 and events[0].data["desired"] == 0
    assert events[0].data["idle_seconds"] == 300.0 and events[0].data["idle"] == 300.0
    for _ in range(600):  # at zero, no figures and no time bring it back by themselves
        clock.now += 1.0
        asyncio.run(scaler.tick())
    assert host.asked == [0]


def test_a_request_waiting_at_zero_starts_one_replica(store: Store) -> None:
    host, clock = Host(store), Clock()
    policies = {"web": ZERO, "api": {**ZERO, "min": 1}}
    scaler = Autoscaler(host, lambda: dict(policies), clock=clock)
    host.set_replicas("web", 0)
    store.set_desired(Desired("api", "service", 1, 0, 0))
    woken = scaler.wake(services_waiting({"web/http": 3, "web/admin": 1, "api/http": 2,
                                          "gone/http": 1}))
    assert woken == ["web"]  # api does not scale to zero; gone is no service
    assert store.desired()["web"].replicas == 1
    event = [e for e in store.events() if e.type == "service.autoscaled"][-1]
    assert event.message == "0 -> 1 replicas: 4 request(s) waiting at zero replicas"
    assert event.data["waiting"] == 4 and event.data["desired"] == 1
    assert scaler.wake({"web": 5}) == []  # already asked for: nothing more
    # Just woken: the idle time counts from the wake, not from before it; and not at all
    # while no replica is READY (a Swarm task starting, with the requests held for it).
    del policies["api"]  # (the fake host's `ready` is one count for every service)
    host.ready = 0
    for _ in range(400):
        clock.now += 1.0
        asyncio.run(scaler.tick())
    assert store.desired()["web"].replicas == 1
    host.ready = 1
    for _ in range(299):
        clock.now += 1.0
        asyncio.run(scaler.tick())
    assert store.desired()["web"].replicas == 1
    clock.now += 2.0
    asyncio.run(scaler.tick())
    assert store.desired()["web"].replicas == 0


def test_the_loop_acts_once_per_newly_parked_request() -> None:
    reports = [{"seq": 0, "held": {}}, {"seq": 2, "held": {"web/http": 2}},
               {"seq": 2, "held": {"web/http": 2}}, {"seq": 3, "held": {}}]
    sinces: list[int] = []
    seen: list[dict[str, int]] = []

    async def held(since: int, wait: float) -> dict[str, Any]:
        sinces.append(since)
        if not reports:
            raise asyncio.CancelledError
        return reports.pop(0)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(watch_held(held, seen.append, lambda: True))
    assert sinces == [-1, 0, 2, 2, 3]
    assert seen == [{"web": 2}, {"web": 2}]


def test_hold_table_defaults() -> None:
    assert hold_table({"min": 1, "max": 2}) is None
    assert hold_table({"min": 0, "max": 2}) == {"queue": 100, "timeout": 30.0}
    assert hold_table({"min": 0, "max": 2, "hold": {"queue": 5, "timeout": 2.5}}) == {
        "queue": 5, "timeout": 2.5}
    assert ZeroPolicy.from_spec({"min": 0, "max": 2}) == ZeroPolicy(idle=300.0)


MANIFEST = """\
app: z
services:
  web:
    run: [python3, -m, http.server]
    ports: {{http: 8000{extra}}}
    autoscale: {{min: 0, max: 3, target_rps_per_replica: 50, idle: 5m{more}}}
"""


def test_the_manifest_accepts_min_0_for_http_and_refuses_it_for_tcp_and_kubernetes(
        tmp_path: Path) -> None:
    def load_manifest_text(text: str) -> Any:
        path = tmp_path / "mso.yaml"
        path.write_text(text)
        return load_manifest(path, {})

    loaded = load_manifest_text(MANIFEST.format(extra="", more=", hold: {queue: 20, timeout: 10s}"))
    scale = loaded.manifest.services["web"].autoscale
    assert scale is not None and scale.min == 0 and scale.idle == 300.0
    assert scale.hold is not None and scale.hold.queue == 20 and scale.hold.timeout == 10.0
    check(loaded, "local")
    check(loaded, "swarm")
    with pytest.raises(ManifestError) as refused:
        check(loaded, "kubernetes")
    assert "autoscale.min: not supported on kubernetes" in str(refused.value)
    assert "mso.yaml:6:" in str(refused.value)
    with pytest.raises(ManifestError) as tcp:
        load_manifest_text(MANIFEST.format(extra=", db: {port: 5432, protocol: tcp}", more=""))
    assert "autoscale.min: scale to zero needs http ports only" in str(tcp.value)
    with pytest.raises(ManifestError) as idle:
        load_manifest_text(MANIFEST.format(extra="", more="").replace("min: 0", "min: 1"))
    assert "idle applies only to scale to zero" in str(idle.value)
