"""Releases on Swarm are immutable: a new image is a new release, even with the same spec.

`apply_manifest` numbers releases by spec hash, which covers the manifest but not the code
baked into an image. On Swarm the code travels in the image (mso's content-addressed tag
of the app folder or of a `build:` context), so a code change with an unchanged manifest
must also get a new number: otherwise release N would silently mean two different images,
and `mso rollback --to N` could not say which one it brings back.

Like the spec hash, the image is compared with what the previous deploy built, not with
the release running now: after a rollback, deploying the same code again must not roll the
bad image out a second time.
"""

from __future__ import annotations

from dataclasses import replace

from mso.releases.apply import AppliedChange, whoami
from mso.engines.swarm import state
from mso.store.db import Store

BUILT_KEY = "swarm.built"  # service -> the image the last deploy built for it


def image_changed(last_built: str | None, running: str | None, now: str) -> bool:
    """Whether `now` differs from what the previous deploy built (when it was recorded;
    a state from before this record compares with the image of the running release)."""
    previous = last_built if last_built is not None else running
    return previous is not None and previous != now


def record_builds(store: Store, changes: list[AppliedChange],
                  built: dict[str, tuple[str, bool]],
                  author: str | None = None) -> list[AppliedChange]:
    """Give a new release to every unchanged service whose image changed, and record the
    image of every release this deploy created. Returns the changes, updated."""
    before: dict[str, str] = state.get_json(store, BUILT_KEY, {})
    out: list[AppliedChange] = []
    desired = store.desired()
    for change in changes:
        image = built.get(change.service)
        want = desired.get(change.service)
        if image is None or want is None:
            out.append(change)
            continue
        running = state.image_for(store, change.service, want.release)
        if not change.created and image_changed(before.get(change.service),
                                                running[0] if running else None, image[0]):
            latest = store.latest_release(change.service)
            assert latest is not None
            rel = store.add_release(change.service, latest.spec_hash, latest.spec,
                                    store.release_secrets(change.service, latest.number),
                                    author or whoami(), f"new image {image[0]}")
            store.set_desired(replace(want, release=rel.number))
            change = AppliedChange(change.service, rel.number, True, rel.change)
        if change.created or state.image_for(store, change.service, change.release) is None:
            state.record_image(store, change.service, change.release, *image)
        out.append(change)
    state.set_json(store, BUILT_KEY, {**before, **{n: i[0] for n, i in built.items()
                                                   if not n.startswith("\0")}})
    return out
