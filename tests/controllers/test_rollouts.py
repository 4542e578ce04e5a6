"""The rollout controller never overwrites a command with a decision it made from the state
before that command (a promote or abort arriving while canary analysis awaits metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mso.controllers.rollouts import Member, RolloutController
from mso.store.db import Store
from mso.store.records import Desired

MODEL = {"ports": {"http": 8000},
         "rollout": {"strategy": "canary", "steps": [{"set_weight": 20}, {"pause": {}}]}}


class FakeHost:
    """A RolloutHost whose metrics call lets a test act while the controller awaits it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.during_metrics: Callable[[], None] = lambda: None

    def members(self, service: str) -> list[Member]:
        return [Member("stable", 1, True, False), Member("canary", 2, True, False)]

    async def metrics(self) -> dict[str, Any]:
        self.during_metrics()
        await asyncio.sleep(0)
        return {}

    def relabel(self, service: str, mapping: dict[str, str]) -> None:
        pass

    def wake(self) -> None:
        pass


def _canary(tmp_path: Path) -> tuple[RolloutController, FakeHost]:
    store = Store(tmp_path / "s.db")
    for n in (1, 2):
        store.add_release("web", f"h{n}", {"kind": "service", "model": MODEL}, {}, "t", "x")
    store.set_desired(Desired("web", "service", 2, 2, 2))
    host = FakeHost(store)
    controller = RolloutController(host)
    controller.begin("web", 1, 2)
    return controller, host


def test_a_promote_while_analysis_awaits_metrics_is_not_overwritten(tmp_path: Path) -> None:
    controller, host = _canary(tmp_path)
    host.during_metrics = lambda: (controller.promote("web"), None)[1]
    asyncio.run(controller.tick())
    state = controller.get("web")
    assert state is not None and state.promoting and state.reason == "full promotion by user"


def test_an_abort_from_another_process_while_deciding_stays_aborted(tmp_path: Path) -> None:
    controller, host = _canary(tmp_path)
    other = RolloutController(FakeHost(Store(tmp_path / "s.db")))  # e.g. the Kubernetes CLI
    host.during_metrics = lambda: (other.abort("web"), None)[1]
    asyncio.run(controller.tick())
    state = controller.get("web")
    assert state is not None and not state.active and state.reason == "aborted by user"
    assert host.store.desired()["web"].release == 1


def test_without_commands_the_tick_still_advances(tmp_path: Path) -> None:
    controller, _ = _canary(tmp_path)
    before = controller.get("web")
    asyncio.run(controller.tick())
    after = controller.get("web")
    assert before is not None and after is not None
    assert (after.step, after.weight) != (before.step, before.weight)


BLUE_GREEN = {"ports": {"http": 8000},
              "rollout": {"strategy": "blue_green", "keep_previous": "5m"}}


def _releases(store: Store, model: dict[str, Any], count: int) -> RolloutController:
    for n in range(1, count + 1):
        store.add_release("web", f"h{n}", {"kind": "service", "model": model}, {}, "t", "x")
    store.set_desired(Desired("web", "service", 2, 2, 2))
    return RolloutController(FakeHost(store))


def _outcomes(store: Store) -> list[str]:
    return [r.outcome for r in store.releases("web")]


def test_a_deploy_during_keep_previous_starts_from_the_promoted_release(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    controller = _releases(store, BLUE_GREEN, 3)
    controller.begin("web", 1, 2)
    controller.promote("web")
    state = controller.begin("web", 2, 3)
    assert (state.from_release, state.to_release) == (2, 3)
    targets, _ = controller.targets("web", Desired("web", "service", 3, 2, 2))
    assert {(t.subset, t.release) for t in targets} == {("stable", 2), ("preview", 3)}
    assert _outcomes(store) == ["superseded", "promoted", "progressing"]
    ended = [e for e in store.events() if e.type == "rollout.superseded"]
    assert [e.data["next_from"] for e in ended] == [2]


def test_a_deploy_during_a_canary_promotion_keeps_the_promoted_release(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    controller = _releases(store, MODEL, 3)
    controller.begin("web", 1, 2)
    promoting = controller.promote("web")
    assert promoting.promoting
    state = controller.begin("web", 2, 3)
    assert state.from_release == 2
    targets, _ = controller.targets("web", Desired("web", "service", 3, 2, 2))
    assert ("stable", 2) in {(t.subset, t.release) for t in targets}


def test_a_deploy_during_a_canary_starts_again_from_stable_and_marks_it_superseded(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    controller = _releases(store, MODEL, 3)
    controller.begin("web", 1, 2)
    state = controller.begin("web", 2, 3)
    assert state.from_release == 1
    assert _outcomes(store) == ["pending", "superseded", "progressing"]


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_timed_pause_ends_by_the_injected_clock_not_the_wall_clock(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    model = {"ports": {"http": 8000},
             "rollout": {"strategy": "canary",
                         "steps": [{"set_weight": 20}, {"pause": {"duration": 10}}, {"set_weight": 60}]}}
    for n in (1, 2):
        store.add_release("web", f"h{n}", {"kind": "service", "model": model}, {}, "t", "x")
    store.set_desired(Desired("web", "service", 2, 2, 2))
    clock = FakeClock()
    controller = RolloutController(FakeHost(store), clock=clock)
    controller.begin("web", 1, 2)
    for _ in range(5):  # the clock stands still: however often it ticks, the pause holds
        asyncio.run(controller.tick())
    held = controller.get("web")
    assert held is not None and held.weight == 20 and held.active
    clock.now += 10.5
    for _ in range(3):
        asyncio.run(controller.tick())
    moved = controller.get("web")
    assert moved is not None and moved.weight == 60, moved


class ReadinessHost(FakeHost):
    """The canary's one replica is not ready until the test says so."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.canary_ready = False

    def members(self, service: str) -> list[Member]:
        return [Member("stable", 1, True), Member("stable", 1, True),
                Member("canary", 2, self.canary_ready)]


def test_a_canary_that_becomes_ready_gets_its_weight_before_the_next_interval(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    for n in (1, 2):
        store.add_release("web", f"h{n}", {"kind": "service", "model": MODEL}, {}, "t", "x")
    store.set_desired(Desired("web", "service", 2, 2, 2))
    clock = FakeClock()
    host = ReadinessHost(store)
    controller = RolloutController(host, clock=clock)
    controller.begin("web", 1, 2)
    asyncio.run(controller.tick())
    first = clock.now
    assert controller.due() == first + 1.0  # the analysis interval (1s by default)
    clock.now += 0.1
    asyncio.run(controller.tick())  # nothing changed: the interval is not over
    waiting = controller.get("web")
    assert waiting is not None and waiting.weight == 0
    host.canary_ready = True  # e.g. Docker said its container became healthy
    asyncio.run(controller.tick())
    ready = controller.get("web")
    assert ready is not None and ready.weight == 20
    # The analysis was read at the first tick: its next reading is still due 1 s later.
    assert controller.due() == first + 1.0


def test_no_active_rollout_means_nothing_is_due(tmp_path: Path) -> None:
    controller, _ = _canary(tmp_path)
    controller.abort("web")
    asyncio.run(controller.tick())
    assert controller.due() is None
