"""A command's hold on a remote engine's store: held only inside and only while fresh; a
later command's hold is left to it; a controller can tell that a hold came and went."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mso.store.db import Store
from mso.store.hold import HOLD_KEY, HOLD_TTL, held, hold, quiet


def test_hold_is_held_only_inside_and_only_while_fresh(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    assert not held(store, 0.0)
    with hold(store):
        since = json.loads(store.get_meta(HOLD_KEY) or "{}")["ts"]
        assert held(store, since + 1)
        assert not held(store, since + HOLD_TTL + 1)  # its command died
    assert not held(store, since + 1)


def test_a_hold_that_came_and_went_changes_the_quiet_token(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    before = quiet(store, time.time())
    assert before == ""
    with hold(store):
        assert quiet(store, time.time()) is None
    after = quiet(store, time.time())
    assert after is not None and after != before
    with hold(store):
        pass
    assert quiet(store, time.time()) not in (None, after)


def test_a_hold_taken_over_by_another_command_is_left_to_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    with hold(store):
        other = json.dumps({"ts": time.time(), "id": "other", "released": False})
        store.set_meta(HOLD_KEY, other)
    assert store.get_meta(HOLD_KEY) == other and held(store, time.time())


def test_a_garbled_hold_does_not_stop_the_controllers(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    for raw in ("not json", "[]", "{}"):
        store.set_meta(HOLD_KEY, raw)
        assert not held(store, 0.0)
