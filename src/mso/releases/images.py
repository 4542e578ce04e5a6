"""A new image is a new release, on every engine that ships code in images.

`apply_manifest` numbers releases by spec hash, which covers the manifest but not the code
baked into an image. On Swarm and Kubernetes the code travels in the image (mso's
content-addressed tag of the app folder or of a `build:` context), so a code change with
an unchanged manifest must also get a new number: otherwise release N would silently mean
two different images, a redeploy of new code would ship nothing, and `mso rollback --to N`
could not say which code it brings back. The new release then rolls out like any other,
with the service's strategy (a canary stays a canary).

Like the spec hash, the image is compared with what the previous deploy built, not with
the release running now: after a rollback, deploying the same code again must not roll the
bad image out a second time.

Each engine keeps its own record of images per release; it hands this module two
callables over that record.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable, Mapping

from mso.releases.apply import AppliedChange, whoami
from mso.store.db import Store

#: The image of a service's release, or None when none is recorded for it.
ImageOf = Callable[[str, int], "str | None"]
#: Record, for a service's release, the image this deploy built for the service.
Record = Callable[[str, int], None]


def image_changed(last_built: str | None, running: str | None, now: str) -> bool:
    """Whether `now` differs from what the previous deploy built (when it was recorded;
    a state from before this record compares with the image of the running release)."""
    previous = last_built if last_built is not None else running
    return previous is not None and previous != now


def record_builds(store: Store, changes: list[AppliedChange], built: Mapping[str, str],
                  image_of: ImageOf, record: Record, built_key: str,
                  author: str | None = None, what: str = "new image") -> list[AppliedChange]:
    """Give a new release to every unchanged service whose image changed, and record the
    image of every release this deploy created. `built` maps services (and jobs) to the
    image this deploy built; `built_key` is the meta key of the last deploy's builds;
    `what` starts the new release's change ("new image", "new code": the embedded
    engine's source digests, mso.releases.sources). Returns the changes, updated."""
    raw = store.get_meta(built_key)
    before: dict[str, str] = json.loads(raw) if raw else {}
    out: list[AppliedChange] = []
    desired = store.desired()
    for change in changes:
        image = built.get(change.service)
        want = desired.get(change.service)
        if image is None or want is None:
            out.append(change)
            continue
        running = image_of(change.service, want.release)
        if not change.created and image_changed(before.get(change.service), running, image):
            latest = store.latest_release(change.service)
            assert latest is not None
            rel = store.add_release(change.service, latest.spec_hash, latest.spec,
                                    store.release_secrets(change.service, latest.number),
                                    author or whoami(), f"{what} {image}")
            store.set_desired(replace(want, release=rel.number))
            change = AppliedChange(change.service, rel.number, True, rel.change)
        if change.created or image_of(change.service, change.release) is None:
            record(change.service, change.release)
        out.append(change)
    store.set_meta(built_key, json.dumps({**before, **{n: i for n, i in built.items()
                                                       if not n.startswith("\0")}},
                                         sort_keys=True))
    return out
