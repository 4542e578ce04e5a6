"""Swarm releases are immutable: new code in an unchanged manifest is a new release, and
a rollback is not undone by deploying the same code again."""

from __future__ import annotations

from pathlib import Path

from mso.releases.apply import AppliedChange
from mso.engines.swarm import state
from mso.engines.swarm.releases import BUILT_KEY, record_builds
from mso.releases.rollback import rollback_target
from mso.store.db import Store
from mso.store.records import Desired

SPEC = {"kind": "service", "model": {}}


def _store(tmp_path: Path) -> Store:
    return Store(tmp_path / "swarm.db")


def _first_deploy(store: Store, image: str) -> None:
    store.add_release("web", "h1", SPEC, {}, "me", "initial release")
    store.set_desired(Desired("web", "service", 1, 2, 2))
    record_builds(store, [AppliedChange("web", 1, True, "initial release")],
                  {"web": (image, True), "\0gateway": ("gw", False)})


def _unchanged(store: Store) -> list[AppliedChange]:
    latest = store.latest_release("web")
    assert latest is not None
    return [AppliedChange("web", latest.number, False, "unchanged")]


def test_first_release_records_its_image(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _first_deploy(store, "app:A")
    assert state.image_for(store, "web", 1) == ("app:A", True)
    assert state.get_json(store, BUILT_KEY, {}) == {"web": "app:A"}


def test_new_code_with_the_same_manifest_is_a_new_release(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _first_deploy(store, "app:A")
    changes = record_builds(store, _unchanged(store), {"web": ("app:B", True)})
    assert changes == [AppliedChange("web", 2, True, "new image app:B")]
    assert store.desired()["web"].release == 2 and store.desired()["web"].replicas == 2
    assert state.image_for(store, "web", 2) == ("app:B", True)
    assert state.image_for(store, "web", 1) == ("app:A", True)  # release 1 never changes
    again = record_builds(store, _unchanged(store), {"web": ("app:B", True)})
    assert again == [AppliedChange("web", 2, False, "unchanged")]


def test_same_code_after_a_rollback_does_not_roll_the_bad_image_out_again(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    _first_deploy(store, "app:A")
    record_builds(store, _unchanged(store), {"web": ("app:B", True)})
    current = store.release("web", 2)
    assert current is not None
    target = rollback_target(store.releases("web"), current, None,
                             lambda number: state.image_for(store, "web", number))
    assert target.number == 1  # same spec, other image: still a release to go back to
    store.add_release("web", "h1", SPEC, {}, "mso", "rollback to release 1")
    state.record_image(store, "web", 3, "app:A", True)
    store.set_desired(Desired("web", "service", 3, 2, 2))
    changes = record_builds(store, _unchanged(store), {"web": ("app:B", True)})
    assert changes == [AppliedChange("web", 3, False, "unchanged")]
    assert state.image_for(store, "web", 3) == ("app:A", True)


def test_state_from_before_the_build_record_compares_with_the_running_image(
        tmp_path: Path) -> None:
    store = _store(tmp_path)
    _first_deploy(store, "app:A")
    store.delete_meta(BUILT_KEY)
    same = record_builds(store, _unchanged(store), {"web": ("app:A", True)})
    assert same == [AppliedChange("web", 1, False, "unchanged")]
    store.delete_meta(BUILT_KEY)
    changed = record_builds(store, _unchanged(store), {"web": ("app:B", True)})
    assert changed[0].created and changed[0].release == 2
