"""Rollout state compare-and-swap: a controller's write lands only over the state it read."""

from __future__ import annotations

import json
from pathlib import Path

from mso.store.db import Store


def test_replace_writes_only_over_the_expected_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    read = {"phase": "Progressing", "weight": 20, "analysis": {"p": 0.5}}
    store.set_rollout("web", read)
    assert store.replace_rollout("web", {**read, "weight": 50}, read)
    assert store.get_rollout("web") == {**read, "weight": 50}
    assert not store.replace_rollout("web", {**read, "weight": 80}, read)  # changed since
    assert store.get_rollout("web") == {**read, "weight": 50}


def test_replace_accepts_the_same_state_stored_in_other_json_text(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    read = {"weight": 20, "phase": "Progressing"}
    store._db.execute("INSERT INTO rollouts VALUES (?,?,?)",
                      ("web", json.dumps(read, indent=1), 0.0))  # not sort_keys
    assert store.replace_rollout("web", {**read, "weight": 50}, read)
    assert store.get_rollout("web") == {**read, "weight": 50}


def test_replace_of_a_missing_rollout_writes_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert not store.replace_rollout("web", {"weight": 50}, {"weight": 20})
    assert store.get_rollout("web") is None
