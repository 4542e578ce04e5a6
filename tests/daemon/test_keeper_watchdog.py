"""The keeper's watchdog (mso.daemon.keeper) on a fake daemon: what it counts as hung."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mso.daemon import keeper as keeper_mod
from mso.paths import StatePaths


class FakeChild:
    pid = 4242

    def __init__(self) -> None:
        self.killed = threading.Event()

    def poll(self) -> int | None:
        return -9 if self.killed.is_set() else None

    def kill(self) -> None:
        self.killed.set()


def run_watchdog(tmp_path: Path, answers: list[bool], monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether the watchdog killed a daemon whose API answers as `answers` says (then
    never again)."""
    script = iter(answers)
    monkeypatch.setattr(keeper_mod, "api_answers", lambda path: next(script, False))
    monkeypatch.setattr(keeper_mod, "WATCHDOG_PERIOD", 0.01)
    monkeypatch.setattr(keeper_mod, "STARTING_PERIOD", 0.01)
    monkeypatch.setattr(keeper_mod, "STARTUP_GRACE", 0.3)
    k = keeper_mod.Keeper(StatePaths(tmp_path), [], [])
    child = FakeChild()
    thread = threading.Thread(target=k.watchdog, args=(child,), daemon=True)
    thread.start()
    thread.join(timeout=10)
    return child.killed.is_set()


def test_a_daemon_that_answered_and_then_hangs_is_killed(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_watchdog(tmp_path, [False, False, True], monkeypatch)


def test_a_daemon_that_never_answers_is_killed_after_the_start_grace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before, a daemon that hung before the watchdog first saw it answer (a SIGSTOP just
    after `mso up -d` returned) was taken for one still starting, for ever."""
    assert run_watchdog(tmp_path, [], monkeypatch)
