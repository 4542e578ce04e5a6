"""The one rollback rule of every engine (mso.releases.rollback)."""

from __future__ import annotations

import pytest

from mso.errors import Conflict, NotFound
from mso.releases.rollback import NoSuchRelease, NothingToRollBack, rollback_target
from mso.store.records import Release


def _rel(n: int, spec_hash: str, outcome: str = "superseded") -> Release:
    return Release("web", n, spec_hash, {}, 0.0, "t", "", outcome)


def test_the_default_skips_identical_and_failed_releases() -> None:
    releases = [_rel(1, "a"), _rel(2, "b", "rolled back"), _rel(3, "c")]
    assert rollback_target(releases, releases[-1], None).number == 1


def test_an_identical_release_is_refused() -> None:
    releases = [_rel(1, "a"), _rel(2, "a")]
    with pytest.raises(NothingToRollBack, match="identical"):
        rollback_target(releases, releases[-1], 1)
    with pytest.raises(NothingToRollBack, match="no earlier release"):
        rollback_target(releases, releases[-1], None)
    assert issubclass(NothingToRollBack, Conflict)


def test_a_missing_release_names_the_kept_ones() -> None:
    releases = [_rel(1, "a"), _rel(2, "b")]
    with pytest.raises(NoSuchRelease, match="kept: 1, 2"):
        rollback_target(releases, releases[-1], 7)
    assert issubclass(NoSuchRelease, NotFound)


def test_a_release_is_its_spec_and_its_image() -> None:
    """New code with an unchanged manifest is a release of its own on every engine that
    ships images, so a rollback to the old code is allowed, to the same image refused."""
    releases = [_rel(1, "a"), _rel(2, "a"), _rel(3, "a")]
    images = {1: "app:old", 2: "app:new", 3: "app:new"}
    assert rollback_target(releases, releases[-1], None, images.get).number == 1
    assert rollback_target(releases, releases[-1], 1, images.get).number == 1
    with pytest.raises(NothingToRollBack):
        rollback_target(releases, releases[-1], 2, images.get)
    with pytest.raises(NothingToRollBack):  # without images: one spec, nothing to undo
        rollback_target(releases, releases[-1], None)
