"""Swarm's side of "a new image is a new release" (mso.releases.images): its images are
recorded with whether they run under mso's shim."""

from __future__ import annotations

from mso.engines.swarm import state
from mso.releases import images
from mso.releases.apply import AppliedChange
from mso.store.db import Store

BUILT_KEY = "swarm.built"  # service -> the image the last deploy built for it
image_changed = images.image_changed


def record_builds(store: Store, changes: list[AppliedChange],
                  built: dict[str, tuple[str, bool]],
                  author: str | None = None) -> list[AppliedChange]:
    """Give a new release to every unchanged service whose image changed, and record the
    image (and shim flag) of every release this deploy created."""
    def image_of(service: str, release: int) -> str | None:
        found = state.image_for(store, service, release)
        return found[0] if found else None

    def record(service: str, release: int) -> None:
        state.record_image(store, service, release, *built[service])

    return images.record_builds(store, changes, {n: i[0] for n, i in built.items()},
                                image_of, record, BUILT_KEY, author)
