"""`wait_rollout`, the loop behind `mso rollout status -w`: exit codes, one report per
change, the timeout, and no wait at all when nothing is rolling out. No real time passes:
the clock and the sleep are fakes."""

from __future__ import annotations

from typing import Any

from mso.cli.waiting import Outcome, change_line, wait_rollout


def canary(phase: str, step: int = 2, weight: int = 20, reason: str = "",
           to: int = 2) -> dict[str, Any]:
    return {"service": "web", "strategy": "canary", "phase": phase, "from_release": 1,
            "to_release": to, "step": step, "steps": 4, "weight": weight, "reason": reason,
            "current_step": "analysis 30s (12s left)"}


class Fake:
    """Serves the statuses in turn (the last one for ever); time moves only in sleep."""

    def __init__(self, *statuses: dict[str, Any]) -> None:
        self.statuses = list(statuses)
        self.now = 0.0
        self.sleeps: list[float] = []
        self.seen: list[dict[str, Any]] = []

    def status(self) -> dict[str, Any]:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def wait(self, timeout: float | None = None) -> Outcome:
        return wait_rollout(self.status, on_change=self.seen.append, timeout=timeout,
                            interval=1.0, clock=lambda: self.now, sleep=self.sleep)


def test_a_promoted_rollout_ends_with_0_and_one_report_per_change() -> None:
    fake = Fake(canary("Progressing", 1, 0), canary("Progressing", 2, 20),
                canary("Progressing", 2, 20), canary("Progressing", 2, 20),
                canary("Progressing", 4, 50), canary("Promoted", 4, 100, "canary promoted"))
    outcome = fake.wait()
    assert outcome.code == 0 and not outcome.timed_out
    assert [(s["step"], s["phase"]) for s in fake.seen] == [
        (1, "Progressing"), (2, "Progressing"), (4, "Progressing"), (4, "Promoted")]
    assert outcome.message == "web: release 2 promoted"
    assert fake.sleeps == [1.0] * 5


def test_a_new_reason_is_a_change_the_same_one_is_not() -> None:
    held = "analysis inconclusive: canary has {} of 50 requests needed, stable 0 of 50"
    fake = Fake(canary("Inconclusive", reason=held.format(0)),
                canary("Inconclusive", reason=held.format(0)),
                canary("Inconclusive", reason=held.format(3)),
                canary("Failed", weight=0, reason="analysis inconclusive for 15s past ..."))
    outcome = fake.wait()
    assert [s["reason"] for s in fake.seen] == [held.format(0), held.format(3),
                                                "analysis inconclusive for 15s past ..."]
    assert outcome.code == 1
    assert outcome.message == "web: release 2 failed: analysis inconclusive for 15s past ..."


def test_a_rolled_back_rollout_ends_with_1() -> None:
    outcome = Fake(canary("Progressing"), canary("RolledBack", 2, 0, "aborted by user")).wait()
    assert outcome.code == 1 and outcome.message == "web: release 2 rolled back: aborted by user"


def test_the_timeout_ends_the_wait_with_1_and_says_where_it_stood() -> None:
    fake = Fake(canary("Inconclusive", reason="analysis inconclusive: no analysis data yet"))
    outcome = fake.wait(timeout=2.5)
    assert outcome.code == 1 and outcome.timed_out
    assert fake.sleeps == [1.0, 1.0, 0.5] and len(fake.seen) == 1
    assert outcome.message == ("web: timed out after 2.5s waiting for release 2: still "
                               "Inconclusive at step 2/4 (analysis 30s (12s left)): analysis "
                               "inconclusive: no analysis data yet")


def test_without_an_active_rollout_it_answers_at_once_with_the_last_outcome() -> None:
    for phase, code in (("Promoted", 0), ("RolledBack", 1), ("Failed", 1)):
        fake = Fake(canary(phase))
        assert fake.wait(timeout=60).code == code and fake.sleeps == []
    nothing = Fake({"service": "web", "strategy": None, "phase": None})
    outcome = nothing.wait()
    assert outcome.code == 0 and nothing.sleeps == []
    assert outcome.message == "web: no rollout to wait for"


def test_a_superseding_deploy_is_followed_to_its_own_end() -> None:
    fake = Fake(canary("Progressing", to=2), canary("Progressing", 1, 0, to=3),
                canary("Promoted", 4, 100, to=3))
    outcome = fake.wait()
    assert [s["to_release"] for s in fake.seen] == [2, 3, 3]
    assert outcome.message == "web: release 3 promoted"


def test_change_lines_show_only_what_applies_to_the_strategy() -> None:
    line = change_line(canary("Inconclusive", reason="analysis inconclusive: x"), now=0)
    assert line.endswith("web 1 -> 2 canary Inconclusive step 2/4 weight 20%: "
                         "analysis inconclusive: x")
    rolling = {"service": "web", "strategy": "rolling", "phase": "Progressing",
               "from_release": 1, "to_release": 2, "step": None, "steps": None,
               "weight": None, "replicas": {"updated": 1, "wanted": 3}, "reason": ""}
    assert change_line(rolling, now=0).endswith("web 1 -> 2 rolling Progressing 1/3 updated")
